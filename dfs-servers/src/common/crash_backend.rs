//! A redb storage backend that simulates power loss, for crash tests.
//!
//! A kill -9 loses nothing the kernel already has; a power loss also loses every write not yet
//! made durable by `fsync`. [`CrashDisk`] models the second: it keeps the durable image (what
//! the last `sync_data` made stable) and the writes made since. [`CrashDisk::crash`] throws the
//! unsynced writes away (or, with [`CrashDisk::crash_keeping`], keeps any subset of them, as a
//! disk that reorders writes might), and a test reopens a fresh `redb::Database` on
//! [`CrashDisk::backend`] to see what survived. [`CrashDisk::crash_after_ops`] arms a crash in
//! the middle of a commit, so a test can cut the power at every step of a commit path.
//!
//! Backends bound to an older "generation" fail every call after a crash, so a `Database` still
//! open on the dead disk cannot write into the image the next one reads.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// One change the disk was asked for and has not made durable yet.
#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Disk {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What reads see: `durable` with `pending` applied.
    current: Vec<u8>,
    /// Changes since the last `sync_data`, in order.
    pending: Vec<Pending>,
    /// Bumped by every crash; backends of older generations are dead.
    generation: u64,
    /// Mutating calls (write, set_len, sync_data) so far, over all generations.
    ops: u64,
    /// Calls to `sync_data` so far.
    syncs: u64,
    /// Crash just before the mutating call with this number runs.
    crash_at_op: Option<u64>,
}

fn apply(image: &mut Vec<u8>, change: &Pending) {
    match change {
        Pending::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[start..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => image.resize(*len as usize, 0),
    }
}

impl Disk {
    fn crash(&mut self, keep: &mut dyn FnMut(usize) -> bool) {
        let pending = std::mem::take(&mut self.pending);
        for (i, change) in pending.iter().enumerate() {
            if keep(i) {
                apply(&mut self.durable, change);
            }
        }
        self.current = self.durable.clone();
        self.generation += 1;
        self.crash_at_op = None;
    }
}

/// A simulated disk shared between a test and the backends it hands to redb.
#[derive(Clone, Debug, Default)]
pub struct CrashDisk {
    disk: Arc<Mutex<Disk>>,
}

impl CrashDisk {
    /// An empty disk.
    pub fn new() -> CrashDisk {
        CrashDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A panicking test thread must not hide the disk from the next assertion.
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A backend for `redb::Builder::create_with_backend`, alive until the next crash.
    pub fn backend(&self) -> CrashBackend {
        CrashBackend {
            disk: self.disk.clone(),
            generation: self.lock().generation,
        }
    }

    /// Power loss: everything not synced is gone, and existing backends stop working.
    pub fn crash(&self) {
        self.lock().crash(&mut |_| false);
    }

    /// Power loss on a disk that may have written some unsynced changes: `keep(i)` says
    /// whether the `i`-th change since the last sync reached the platter.
    pub fn crash_keeping(&self, mut keep: impl FnMut(usize) -> bool) {
        self.lock().crash(&mut keep);
    }

    /// Arms a crash that happens right before the `n`-th mutating call from now (0 = the next
    /// one); that call and every later one on current backends fail.
    pub fn crash_after_ops(&self, n: u64) {
        let mut disk = self.lock();
        disk.crash_at_op = Some(disk.ops + n);
    }

    /// Whether the armed crash has happened (or no crash is armed).
    pub fn crashed_or_unarmed(&self) -> bool {
        self.lock().crash_at_op.is_none()
    }

    /// Mutating calls (write, set_len, sync_data) so far; lets a test count a commit's steps.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Calls to `sync_data` so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Changes waiting for the next sync.
    pub fn pending_changes(&self) -> usize {
        self.lock().pending.len()
    }
}

/// The redb side of a [`CrashDisk`], valid until the disk crashes.
#[derive(Debug)]
pub struct CrashBackend {
    disk: Arc<Mutex<Disk>>,
    generation: u64,
}

fn dead() -> io::Error {
    io::Error::other("simulated power loss: this disk is gone")
}

impl CrashBackend {
    /// The disk, if this backend has not been cut off by a crash.
    fn alive(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if disk.generation != self.generation {
            return Err(dead());
        }
        Ok(disk)
    }

    /// Like `alive`, for calls that change the disk: counts them and fires an armed crash.
    fn mutating(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let mut disk = self.alive()?;
        if disk.crash_at_op == Some(disk.ops) {
            disk.crash(&mut |_| false);
            return Err(dead());
        }
        disk.ops += 1;
        Ok(disk)
    }
}

impl redb::StorageBackend for CrashBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.alive()?.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let disk = self.alive()?;
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let end = start
            .checked_add(out.len())
            .filter(|end| *end <= disk.current.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(&disk.current[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self.mutating()?;
        let change = Pending::SetLen(len);
        apply(&mut disk.current, &change);
        disk.pending.push(change);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.mutating()?;
        disk.syncs += 1;
        disk.pending.clear();
        disk.durable = disk.current.clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut disk = self.mutating()?;
        let change = Pending::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut disk.current, &change);
        disk.pending.push(change);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn open(disk: &CrashDisk) -> redb::Database {
        redb::Builder::new()
            .create_with_backend(disk.backend())
            .unwrap()
    }

    fn put(db: &redb::Database, k: u64, durability: redb::Durability) {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(durability).unwrap();
        txn.open_table(T).unwrap().insert(k, k).unwrap();
        txn.commit().unwrap();
    }

    fn keys(db: &redb::Database) -> Vec<u64> {
        let txn = db.begin_read().unwrap();
        let Ok(table) = txn.open_table(T) else {
            return vec![];
        };
        use redb::ReadableTable;
        table
            .iter()
            .unwrap()
            .map(|r| r.unwrap().0.value())
            .collect()
    }

    #[test]
    fn synced_commits_survive_and_unsynced_ones_do_not() {
        let disk = CrashDisk::new();
        let db = open(&disk);
        put(&db, 1, redb::Durability::Immediate);
        put(&db, 2, redb::Durability::None);
        // A non-durable commit is not synced (redb may not even have written it yet).
        disk.crash();
        // The old database is cut off: it cannot write into the image that survived.
        let late = db.begin_write().map_err(drop).and_then(|txn| {
            txn.open_table(T)
                .map_err(drop)?
                .insert(3, 3)
                .map_err(drop)?;
            txn.commit().map_err(drop)
        });
        assert!(late.is_err());
        drop(db);
        let db = open(&disk);
        assert_eq!(keys(&db), vec![1]);
    }

    #[test]
    fn an_armed_crash_fails_the_commit_it_interrupts() {
        let disk = CrashDisk::new();
        let db = open(&disk);
        disk.crash_after_ops(1);
        let txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap().insert(7, 7).unwrap();
        assert!(txn.commit().is_err());
        assert!(disk.crashed_or_unarmed());
        drop(db);
        assert!(keys(&open(&disk)).is_empty());
    }
}
