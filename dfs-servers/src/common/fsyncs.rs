//! Counting the durable steps a server takes, for `GET /v1/stats` (issue 14): every fsync
//! costs a disk round trip, and the number per created file is what the speed work lowers.
//!
//! Fileservers count their own `fsync`/`fdatasync` calls at the storage door. The redb stores
//! (nameserver, lockserver) sit on [`CountingBackend`], which counts every `sync_data` redb
//! issues on its file: exactly redb's fsyncs, whatever its commit protocol needs (one per
//! durable commit in redb 4, which the tests below check).

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A shared, monotonically growing count (fsyncs, commits), cheap to bump from any thread.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` (several changes committed together).
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A redb storage backend that forwards everything to `inner` and counts `sync_data`, so a
/// store reports the fsyncs redb really issued rather than an estimate.
#[derive(Debug)]
pub struct CountingBackend<B> {
    inner: B,
    syncs: Counter,
}

impl<B: redb::StorageBackend> CountingBackend<B> {
    /// Wraps `inner`; every `sync_data` bumps `syncs`.
    pub fn new(inner: B, syncs: Counter) -> CountingBackend<B> {
        CountingBackend { inner, syncs }
    }
}

impl<B: redb::StorageBackend> redb::StorageBackend for CountingBackend<B> {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        // Counted before the call: a failed fsync still cost the disk its round trip.
        self.syncs.bump();
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }

    // The file locks keep a second process (or a restarted server in tests) off an open store;
    // they must reach the real file, or redb would treat the store as unlockable.
    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Opens (or creates) the redb file at `path` on a [`CountingBackend`] over redb's own file
/// backend, with the same file options as `redb::Builder::create`.
pub fn create_counted(
    path: &std::path::Path,
    syncs: Counter,
) -> Result<redb::Database, redb::DatabaseError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let backend = redb::backends::FileBackend::new(file)?;
    redb::Builder::new().create_with_backend(CountingBackend::new(backend, syncs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[test]
    fn counts_the_syncs_of_durable_commits_only() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = Counter::default();
        let db = create_counted(&dir.path().join("x.redb"), syncs.clone()).unwrap();
        let put = |k: u64, durability| {
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(durability).unwrap();
            txn.open_table(T).unwrap().insert(k, k).unwrap();
            txn.commit().unwrap();
        };
        put(1, redb::Durability::Immediate);
        let before = syncs.get();
        put(2, redb::Durability::Immediate);
        assert_eq!(
            syncs.get() - before,
            1,
            "redb 4 makes a durable commit with one fsync"
        );
        put(3, redb::Durability::None);
        assert_eq!(
            syncs.get() - before,
            1,
            "a non-durable commit does not fsync"
        );
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let _first = create_counted(&path, Counter::default()).unwrap();
        assert!(matches!(
            create_counted(&path, Counter::default()),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
        ));
    }
}
