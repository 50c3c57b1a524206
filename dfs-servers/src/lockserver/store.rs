//! Durable lockserver state in redb: the fencing counter and every granted lease.
//!
//! Every change is one write transaction committed with `Durability::Immediate` (redb's
//! default) before the caller replies, so an acknowledged grant, renewal or release survives a
//! kill -9 or a power loss. The store can sit on the real file ([`Store::open`]) or on any
//! [`redb::StorageBackend`] ([`Store::with_backend`]), which is how the power-loss tests run it
//! on [`crate::common::crash_backend::CrashBackend`].

use crate::common::fsyncs::{create_counted, Counter, CountingBackend};
use dfs_proto::locks::LockserverStats;
use dfs_proto::DfsPath;
use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// token -> JSON-encoded [`StoredLease`].
const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
/// Small named counters; only [`NEXT_TOKEN`] today.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key in [`META`] of the next fencing token to hand out.
const NEXT_TOKEN: &str = "next_token";
/// The first token ever given; 0 stays free to mean "no token" in other parts of DFS.
pub const FIRST_TOKEN: u64 = 1;

/// A storage failure; the server answers `internal` and the in-memory state is left unchanged.
#[derive(Debug, thiserror::Error)]
#[error("lock store: {0}")]
pub struct StoreError(String);

impl StoreError {
    fn from_any(err: impl std::fmt::Display) -> StoreError {
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
    /// The next token to give; greater than every token ever saved.
    pub next_token: u64,
    /// Saved leases by token.
    pub leases: BTreeMap<u64, StoredLease>,
}

/// One atomic change: all of it is durable, or none of it.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// New value of the counter, when a token was handed out.
    pub next_token: Option<u64>,
    /// Leases to insert or overwrite.
    pub put: Vec<(u64, StoredLease)>,
    /// Leases to forget (released, or expired and taken over).
    pub delete: Vec<u64>,
}

impl Batch {
    /// Whether committing it would change nothing (lets callers skip an fsync).
    pub fn is_empty(&self) -> bool {
        self.next_token.is_none() && self.put.is_empty() && self.delete.is_empty()
    }
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
    /// Durable commits of [`Store::apply`].
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
                meta.insert(NEXT_TOKEN, FIRST_TOKEN)
                    .map_err(StoreError::from_any)?;
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

    /// Reads the counter and every saved lease.
    ///
    /// The counter returned is also raised above any saved token, so even a store edited by hand
    /// can never make a token repeat.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from_any)?;
        let meta = txn.open_table(META).map_err(StoreError::from_any)?;
        let mut next_token = meta
            .get(NEXT_TOKEN)
            .map_err(StoreError::from_any)?
            .map(|v| v.value())
            .unwrap_or(FIRST_TOKEN);
        let table = txn.open_table(LEASES).map_err(StoreError::from_any)?;
        let mut leases = BTreeMap::new();
        for item in table.iter().map_err(StoreError::from_any)? {
            let (token, bytes) = item.map_err(StoreError::from_any)?;
            let lease: StoredLease =
                serde_json::from_slice(bytes.value()).map_err(StoreError::from_any)?;
            next_token = next_token.max(token.value().saturating_add(1));
            leases.insert(token.value(), lease);
        }
        Ok(Snapshot { next_token, leases })
    }

    /// Commits `batch` durably; returns only once it is on stable storage.
    pub fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::from_any)?;
        {
            if let Some(next) = batch.next_token {
                let mut meta = txn.open_table(META).map_err(StoreError::from_any)?;
                meta.insert(NEXT_TOKEN, next)
                    .map_err(StoreError::from_any)?;
            }
            let mut table = txn.open_table(LEASES).map_err(StoreError::from_any)?;
            for token in &batch.delete {
                table.remove(*token).map_err(StoreError::from_any)?;
            }
            for (token, lease) in &batch.put {
                let bytes = serde_json::to_vec(lease).map_err(StoreError::from_any)?;
                table
                    .insert(*token, bytes.as_slice())
                    .map_err(StoreError::from_any)?;
            }
        }
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
    fn batches_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.redb");
        {
            let store = Store::open(&file).unwrap();
            assert_eq!(store.load().unwrap().next_token, FIRST_TOKEN);
            store
                .apply(&Batch {
                    next_token: Some(3),
                    put: vec![(1, lease("a", "/x")), (2, lease("b", "/y"))],
                    delete: vec![],
                })
                .unwrap();
            store
                .apply(&Batch {
                    delete: vec![1],
                    ..Batch::default()
                })
                .unwrap();
        }
        let store = Store::open(&file).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.next_token, 3);
        assert_eq!(snap.leases.len(), 1);
        assert_eq!(snap.leases[&2], lease("b", "/y"));
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
                ..Snapshot::default()
            }
        );
        assert!(!file.with_extension("redb.creating").exists());
    }

    #[test]
    fn counter_is_never_below_a_saved_token() {
        let store = Store::with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        store
            .apply(&Batch {
                put: vec![(9, lease("a", "/x"))],
                ..Batch::default()
            })
            .unwrap();
        assert_eq!(store.load().unwrap().next_token, 10);
    }
}
