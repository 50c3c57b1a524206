//! The on-disk cache: whole files, clean ones keyed by (file id, version), dirty ones holding
//! changes not yet published.
//!
//! Layout of the cache directory:
//! - `clean/<id>-<version>`: an exact copy of a published version; evicted LRU when the cache
//!   is over its bound; re-indexed after a restart (the name says what it is).
//! - `dirty/<id>-<token>.data` + `.json`: a file being written, or one whose upload failed.
//!   Never evicted; the `.json` names the DFS path so a person can recover it.
//! - `tmp/`: downloads in progress; emptied at start.
//! - `LOCK`: flock'd by the mount that owns the directory.

use crate::cache_state;
use dfs_proto::{FileId, Version};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a dirty file's `.json` sidecar records, for recovery by hand.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirtyMeta {
    /// The DFS path the changes belong to.
    pub path: String,
    /// The file's id.
    pub file_id: FileId,
    /// The version the changes were made on top of.
    pub base_version: Version,
    /// The fencing token of the lease they were made under.
    pub token: u64,
    /// Last error seen while publishing, if any.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Closed on a `-o writeback` mount: the content is complete and durable here, and the
    /// mount publishes it (in the background, or at its next start after a crash).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

#[derive(Debug, Default)]
struct Index {
    /// (id, version) -> (size, LRU tick).
    entries: HashMap<(FileId, Version), (u64, u64)>,
    /// LRU tick -> key; the smallest tick is the least recently used.
    order: BTreeMap<u64, (FileId, Version)>,
    clean_bytes: u64,
    tick: u64,
}

impl Index {
    fn touch(&mut self, key: (FileId, Version)) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self.entries.get_mut(&key) {
            Some(entry) => {
                self.order.remove(&entry.1);
                entry.1 = tick;
                self.order.insert(tick, key);
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, key: (FileId, Version), size: u64) {
        self.remove(key);
        self.tick += 1;
        self.entries.insert(key, (size, self.tick));
        self.order.insert(self.tick, key);
        self.clean_bytes += size;
    }

    fn remove(&mut self, key: (FileId, Version)) -> bool {
        match self.entries.remove(&key) {
            Some((size, tick)) => {
                self.order.remove(&tick);
                self.clean_bytes -= size;
                true
            }
            None => false,
        }
    }
}

/// The cache of one mount. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    /// Bytes held by dirty files, counted against the bound but never evicted.
    dirty_bytes: AtomicU64,
    tmp_seq: AtomicU64,
    _lock: File,
}

/// The cache's subdirectories, made at start and again if someone removes them while mounted.
const SUBDIRS: [&str; 3] = ["clean", "dirty", "tmp"];

/// How long a new mount waits for the previous one to let go of the cache: right after
/// `umount` returns, the old daemon may still be flushing the cache and recording its end.
/// (Unit tests that check the refusal wait less.)
const LOCK_WAIT: std::time::Duration = if cfg!(test) {
    std::time::Duration::from_secs(1)
} else {
    std::time::Duration::from_secs(10)
};

/// Takes the exclusive lock on the cache, waiting up to [`LOCK_WAIT`] for a mount that is
/// shutting down.
fn take_lock(lock: &File) -> bool {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a file descriptor we own has no memory-safety preconditions.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Cache {
    /// Opens (creating) the cache at `root`, takes its lock, empties `tmp/` and re-indexes
    /// clean files. Fails when another mount uses the same directory.
    pub fn open(root: &Path, max_bytes: u64) -> io::Result<Cache> {
        for sub in SUBDIRS {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let lock = File::create(root.join("LOCK"))?;
        if !take_lock(&lock) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "cache directory {} is in use by another dfs-fuse mount; give each mount its own --cache-dir",
                    root.display()
                ),
            ));
        }
        for entry in std::fs::read_dir(root.join("tmp"))? {
            let _ = std::fs::remove_file(entry?.path());
        }
        // Clean copies are renamed into place without an fsync: after a machine crash
        // while mounted they may be torn, and are dropped (see `cache_state`).
        let trusted = cache_state::previous_is_trusted(root);
        let mut dropped = 0usize;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(root.join("clean"))? {
            let entry = entry?;
            if !trusted {
                std::fs::remove_file(entry.path())?;
                dropped += 1;
                continue;
            }
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(parse_clean_name) else {
                let _ = std::fs::remove_file(entry.path());
                continue;
            };
            let meta = entry.metadata()?;
            let used = meta.accessed().or_else(|_| meta.modified()).ok();
            found.push((used, key, meta.len()));
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "this cache was in use when the machine went down (or has no record of its last unmount): its cached copies were dropped and are fetched again when opened"
            );
        }
        cache_state::mark_running(root)?;
        found.sort_by_key(|(used, _, _)| *used);
        let mut index = Index::default();
        for (_, key, size) in found {
            index.insert(key, size);
        }
        let mut dirty = 0;
        for entry in std::fs::read_dir(root.join("dirty"))? {
            let entry = entry?;
            if entry.path().extension().is_some_and(|e| e == "data") {
                dirty += entry.metadata()?.len();
            }
        }
        let cache = Cache {
            root: root.to_path_buf(),
            max_bytes,
            index: Mutex::new(index),
            dirty_bytes: AtomicU64::new(dirty),
            tmp_seq: AtomicU64::new(0),
            _lock: lock,
        };
        cache.evict(0);
        Ok(cache)
    }

    /// At unmount: flushes the cache's files to disk and records a clean end, so the clean
    /// copies are kept for the next mount even across a reboot.
    pub fn close(&self) {
        if let Err(err) = cache_state::mark_clean(&self.root) {
            tracing::warn!(%err, "could not record a clean unmount of the cache; its copies will be fetched again after a reboot");
        }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the cache's directories again when someone removed them (or the whole cache
    /// directory) while mounted, so the mount keeps working: new files can be created and
    /// opens download again. Copies that were in them are gone; the index forgets each one
    /// when it is next looked up.
    pub fn recreate_dirs(&self) -> io::Result<()> {
        let mut made = false;
        for sub in SUBDIRS {
            let dir = self.root.join(sub);
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir)?;
                made = true;
            }
        }
        if made {
            tracing::warn!(
                cache = %self.root.display(),
                "the cache directories were removed while mounted; recreated them"
            );
            // The state record went with them: without it the next start would not know
            // whether to trust the copies made from now on.
            if let Err(err) = cache_state::mark_running(&self.root) {
                tracing::warn!(%err, "cannot record the recreated cache's state");
            }
        }
        Ok(())
    }

    /// Runs `op`; when it fails with `NotFound` (a cache directory was removed under the
    /// mount), recreates the directories and runs it once more.
    fn retry_missing<T>(&self, op: impl Fn() -> io::Result<T>) -> io::Result<T> {
        match op() {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.recreate_dirs()?;
                op()
            }
            other => other,
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the clean copy of (id, version) lives.
    pub fn clean_path(&self, id: FileId, version: Version) -> PathBuf {
        self.root.join("clean").join(format!("{id}-{version}"))
    }

    /// The clean copy of (id, version), when cached; marks it recently used.
    pub fn lookup(&self, id: FileId, version: Version) -> Option<PathBuf> {
        if self.index().touch((id, version)) {
            let path = self.clean_path(id, version);
            if path.exists() {
                return Some(path);
            }
            self.index().remove((id, version));
        }
        None
    }

    /// A fresh name under `tmp/` for a download in progress.
    pub fn temp_path(&self) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join("tmp");
        // One stat per download, so a removed cache directory does not fail every open.
        if !dir.is_dir() {
            if let Err(err) = self.recreate_dirs() {
                tracing::warn!(%err, "cannot recreate the cache directories");
            }
        }
        dir.join(format!("{}-{n}", std::process::id()))
    }

    /// Moves a finished download (or published dirty file) into place as (id, version), and
    /// evicts older clean files if the cache is now over its bound.
    pub fn insert(&self, id: FileId, version: Version, from: &Path) -> io::Result<PathBuf> {
        let size = std::fs::metadata(from)?.len();
        let dest = self.clean_path(id, version);
        self.retry_missing(|| std::fs::rename(from, &dest))?;
        self.index().insert((id, version), size);
        self.evict(size);
        Ok(dest)
    }

    /// Drops every cached version of `id` except `keep` (older versions are never read again).
    pub fn drop_other_versions(&self, id: FileId, keep: Option<Version>) {
        let victims: Vec<_> = self
            .index()
            .entries
            .keys()
            .filter(|(i, v)| *i == id && Some(*v) != keep)
            .copied()
            .collect();
        for key in victims {
            if self.index().remove(key) {
                let _ = std::fs::remove_file(self.clean_path(key.0, key.1));
            }
        }
    }

    /// Evicts least-recently-used clean files until clean + dirty bytes fit the bound, sparing
    /// the newest `spare` bytes' worth (the file just inserted) when it alone is too large.
    fn evict(&self, _spare: u64) {
        let dirty = self.dirty_bytes.load(Ordering::Relaxed);
        loop {
            let victim = {
                let mut index = self.index();
                if index.clean_bytes + dirty <= self.max_bytes || index.entries.len() <= 1 {
                    return;
                }
                let Some((_, key)) = index.order.iter().next().map(|(t, k)| (*t, *k)) else {
                    return;
                };
                index.remove(key);
                key
            };
            // Open handles keep reading an unlinked file; only the name goes.
            let _ = std::fs::remove_file(self.clean_path(victim.0, victim.1));
        }
    }

    /// Bytes of clean files currently indexed.
    pub fn clean_bytes(&self) -> u64 {
        self.index().clean_bytes
    }

    /// Number of clean files currently indexed.
    pub fn clean_count(&self) -> usize {
        self.index().entries.len()
    }

    /// Whether (id, version) is indexed, without touching its LRU position.
    pub fn contains(&self, id: FileId, version: Version) -> bool {
        self.index().entries.contains_key(&(id, version))
    }

    /// Paths of a dirty file and its sidecar.
    pub fn dirty_paths(&self, id: FileId, token: u64) -> (PathBuf, PathBuf) {
        let dir = self.root.join("dirty");
        (
            dir.join(format!("{id}-{token}.data")),
            dir.join(format!("{id}-{token}.json")),
        )
    }

    /// Creates the dirty file for a writer: a copy of `base` (a clean file), or empty.
    pub fn create_dirty(&self, meta: &DirtyMeta, base: Option<&Path>) -> io::Result<PathBuf> {
        self.retry_missing(|| self.create_dirty_once(meta, base))
    }

    fn create_dirty_once(&self, meta: &DirtyMeta, base: Option<&Path>) -> io::Result<PathBuf> {
        let (data, side) = self.dirty_paths(meta.file_id, meta.token);
        let json = meta_json(meta)?;
        match base {
            Some(base) => {
                let tmp = data.with_extension("copying");
                std::fs::copy(base, &tmp)?;
                attach_meta(&tmp, &side, &json)?;
                std::fs::rename(&tmp, &data)?;
            }
            None => {
                // Empty: a crash before the record is attached leaves nothing to recover.
                File::create(&data)?;
                attach_meta(&data, &side, &json)?;
            }
        }
        let size = std::fs::metadata(&data)?.len();
        self.dirty_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(data)
    }

    /// Turns the clean copy of (id, `version`) into the dirty file of a writer, in place (a
    /// rename: the same local file). Descriptors already reading that copy (and, with
    /// passthrough, the kernel's one backing file of the inode) then go on with the file
    /// being written, as on a local disk; nothing is copied.
    pub fn adopt_dirty(&self, meta: &DirtyMeta, version: Version) -> io::Result<PathBuf> {
        let (data, side) = self.dirty_paths(meta.file_id, meta.token);
        let clean = self.clean_path(meta.file_id, version);
        let json = meta_json(meta)?;
        self.index().remove((meta.file_id, version));
        std::fs::rename(&clean, &data)?;
        attach_meta(&data, &side, &json)?;
        let size = std::fs::metadata(&data)?.len();
        self.dirty_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(data)
    }

    /// Makes `file`, the open clean copy of (id, `old`), the clean copy of (id, `new`) in
    /// place: the content of the cached `new` is copied into it and it takes that name. With
    /// passthrough the kernel allows one backing file per inode for as long as any
    /// descriptor is open, so a newer version must arrive in that same file.
    pub fn replace_in_place(
        &self,
        id: FileId,
        old: Version,
        new: Version,
        file: &File,
    ) -> io::Result<()> {
        let old_path = self.clean_path(id, old);
        let new_path = self.clean_path(id, new);
        let mut src = File::open(&new_path)?;
        let len = src.metadata()?.len();
        let mut dst = file;
        io::Seek::seek(&mut dst, io::SeekFrom::Start(0))?;
        io::copy(&mut src, &mut dst)?;
        file.set_len(len)?;
        std::fs::rename(&old_path, &new_path)?;
        let mut index = self.index();
        index.remove((id, old));
        index.insert((id, new), len);
        Ok(())
    }

    /// Records the last publish error in a dirty file's sidecar, for whoever recovers it
    /// (a writeback file stays pending: its publish is retried).
    pub fn note_dirty_error(&self, meta: &DirtyMeta, error: &str) {
        let (data, side) = self.dirty_paths(meta.file_id, meta.token);
        let mut meta = meta.clone();
        meta.last_error = Some(error.to_owned());
        meta.pending |= record_of(&data).is_some_and(|m| m.pending);
        let _ = write_meta(&side, &meta);
    }

    /// Stages a closed file for writeback: its content (`file`) and its record, marked
    /// pending, are durable in the cache before this returns, so a crash of the mount or of
    /// the machine leaves it to be published at the next start.
    pub fn stage_dirty(&self, meta: &DirtyMeta, file: &File) -> io::Result<()> {
        let (data, side) = self.dirty_paths(meta.file_id, meta.token);
        let mut staged = record_of(&data).unwrap_or_else(|| meta.clone());
        staged.pending = true;
        let json = meta_json(&staged)?;
        attach_meta(&data, &side, &json)?;
        if side.exists() {
            // A sidecar (from an earlier failed publish) is read before the attribute.
            write_meta(&side, &staged)?;
            File::open(&side)?.sync_all()?;
        }
        file.sync_all()?;
        File::open(self.root.join("dirty"))?.sync_all()
    }

    /// Ends the writeback of a dirty file whose publish failed for good (a conflict): it is
    /// kept for recovery by hand, no longer pending.
    pub fn unstage_dirty(&self, meta: &DirtyMeta, error: &str) {
        let (data, side) = self.dirty_paths(meta.file_id, meta.token);
        let mut record = record_of(&data).unwrap_or_else(|| meta.clone());
        record.pending = false;
        record.last_error = Some(error.to_owned());
        let _ = write_meta(&side, &record);
    }

    /// A published dirty file becomes the clean copy of `version`.
    pub fn promote_dirty(&self, meta: &DirtyMeta, version: Version) -> io::Result<()> {
        let (data, side) = self.dirty_paths(meta.file_id, meta.token);
        let size = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
        self.drop_other_versions(meta.file_id, Some(version));
        let _ = xattr::remove(&data, META_XATTR);
        self.insert(meta.file_id, version, &data)?;
        remove_sidecar(&side);
        self.sub_dirty(size);
        Ok(())
    }

    /// Throws a dirty file away (nothing was changed, or its file was deleted).
    pub fn discard_dirty(&self, meta: &DirtyMeta) {
        let (data, side) = self.dirty_paths(meta.file_id, meta.token);
        let size = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(data);
        remove_sidecar(&side);
        self.sub_dirty(size);
    }

    /// Moves a dirty file whose publish failed to a name of its own
    /// (`dirty/<id>-<token>-<nanos>.data` + `.json`), so a later writer that gets the same
    /// lease token back cannot overwrite it. Returns the new data path.
    pub fn set_aside_dirty(&self, meta: &DirtyMeta) -> Option<PathBuf> {
        let (data, side) = self.dirty_paths(meta.file_id, meta.token);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self.root.join("dirty");
        let kept = dir.join(format!("{}-{}-{stamp}.data", meta.file_id, meta.token));
        std::fs::rename(&data, &kept).ok()?;
        let _ = std::fs::rename(&side, kept.with_extension("json"));
        Some(kept)
    }

    fn sub_dirty(&self, size: u64) {
        let _ = self
            .dirty_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(size))
            });
    }

    /// Dirty files left over from earlier runs (failed uploads, crashes): (data, meta).
    pub fn leftover_dirty(&self) -> Vec<(PathBuf, Option<DirtyMeta>)> {
        let Ok(dir) = std::fs::read_dir(self.root.join("dirty")) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "data"))
            .map(|p| {
                let meta = record_of(&p);
                (p, meta)
            })
            .collect()
    }
}

/// The record of the dirty file `data`: its sidecar (written on a failed publish, newer than
/// the attribute), else its attribute.
fn record_of(data: &Path) -> Option<DirtyMeta> {
    std::fs::read(data.with_extension("json"))
        .ok()
        .or_else(|| xattr::get(data, META_XATTR).ok().flatten())
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Extended attribute holding a dirty file's [`DirtyMeta`] as JSON.
///
/// Keeping it on the data file instead of a sidecar file saves creating and deleting a
/// second inode per written file, which on ext4 without a journal slows every later inode
/// allocation (freshly deleted inodes are scanned past for a while).
pub const META_XATTR: &str = "user.dfs.dirty";

/// Records `json` on `data` as [`META_XATTR`]; where the cache filesystem has no user
/// extended attributes, in the sidecar file `side` instead.
fn attach_meta(data: &Path, side: &Path, json: &[u8]) -> io::Result<()> {
    match xattr::set(data, META_XATTR, json) {
        Ok(()) => Ok(()),
        Err(err) => {
            tracing::debug!(%err, "no user xattrs in the cache dir: writing a sidecar");
            std::fs::write(side, json)
        }
    }
}

/// Removes a sidecar if there is one (there is none unless a publish failed).
fn remove_sidecar(side: &Path) {
    match std::fs::remove_file(side) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(%err, file = %side.display(), "cannot remove sidecar"),
    }
}

/// The JSON form of a dirty file's record, for the xattr and for the sidecar alike.
fn meta_json(meta: &DirtyMeta) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(meta).map_err(io::Error::other)
}

fn write_meta(path: &Path, meta: &DirtyMeta) -> io::Result<()> {
    std::fs::write(path, meta_json(meta)?)
}

fn parse_clean_name(name: &str) -> Option<(FileId, Version)> {
    let (id, version) = name.split_once('-')?;
    Some((id.parse().ok()?, version.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cache: &Cache, id: FileId, version: Version, bytes: usize) {
        let tmp = cache.temp_path();
        std::fs::write(&tmp, vec![7u8; bytes]).unwrap();
        cache.insert(id, version, &tmp).unwrap();
    }

    fn meta(id: FileId, token: u64) -> DirtyMeta {
        DirtyMeta {
            path: format!("/f{id}"),
            file_id: id,
            base_version: 0,
            token,
            last_error: None,
            pending: false,
        }
    }

    #[test]
    fn clean_copies_survive_a_restart_unless_the_machine_went_down_while_mounted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = Cache::open(dir.path(), 1 << 20).unwrap();
            put(&cache, 1, 1, 100);
        } // dropped without close: a killed mount under this boot
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        assert!(
            cache.contains(1, 1),
            "kill -9 loses nothing the kernel holds"
        );
        put(&cache, 2, 1, 100);
        cache.close();
        drop(cache);
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        assert!(
            cache.contains(1, 1) && cache.contains(2, 1),
            "clean unmount"
        );
        drop(cache);
        // The record says a mount was running in another boot: a power loss may have torn
        // the copies renamed in without an fsync.
        std::fs::write(
            dir.path().join(cache_state::STATE_FILE),
            "running another-boot\n",
        )
        .unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        assert!(!cache.contains(1, 1) && !cache.contains(2, 1));
        assert!(!cache.clean_path(1, 1).exists());
        assert_eq!(cache.clean_bytes(), 0);
    }

    #[test]
    fn a_new_mount_waits_for_the_previous_one_to_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = Cache::open(dir.path(), 1 << 20).unwrap();
        let closing = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            first.close();
            drop(first);
        });
        let second = Cache::open(dir.path(), 1 << 20);
        closing.join().unwrap();
        assert!(second.is_ok(), "{second:?}");
    }

    #[test]
    fn lru_evicts_least_recently_used_clean_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 300).unwrap();
        put(&cache, 1, 1, 100);
        put(&cache, 2, 1, 100);
        put(&cache, 3, 1, 100);
        assert!(cache.lookup(1, 1).is_some()); // 1 is now the most recent
        put(&cache, 4, 1, 100);
        assert!(!cache.contains(2, 1), "2 was least recently used");
        assert!(!cache.clean_path(2, 1).exists());
        assert!(cache.contains(1, 1) && cache.contains(3, 1) && cache.contains(4, 1));
        assert_eq!(cache.clean_bytes(), 300);
    }

    #[test]
    fn dirty_files_are_never_evicted_but_count_against_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 250).unwrap();
        put(&cache, 1, 1, 100);
        let base = cache.lookup(1, 1).unwrap();
        let dirty = cache.create_dirty(&meta(1, 9), Some(&base)).unwrap();
        assert_eq!(std::fs::read(&dirty).unwrap().len(), 100);
        put(&cache, 2, 1, 100);
        put(&cache, 3, 1, 100);
        // 100 dirty + at most 100..150 clean: only the newest clean file survives.
        assert!(dirty.exists());
        assert!(cache.contains(3, 1));
        assert!(!cache.contains(1, 1) && !cache.contains(2, 1));
        // Publishing promotes the dirty file to the clean copy of the new version.
        cache.promote_dirty(&meta(1, 9), 77).unwrap();
        assert!(!dirty.exists());
        assert!(cache.contains(1, 77));
    }

    #[test]
    fn survives_restart_and_keeps_dirty_files_for_recovery() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = Cache::open(dir.path(), 1 << 20).unwrap();
            put(&cache, 5, 6, 10);
            cache.create_dirty(&meta(8, 3), None).unwrap();
            cache.note_dirty_error(&meta(8, 3), "upload failed");
            std::fs::write(cache.temp_path(), b"partial").unwrap();
            // A second mount cannot take the same directory.
            assert!(Cache::open(dir.path(), 1 << 20).is_err());
        }
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        assert!(cache.lookup(5, 6).is_some());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        let left = cache.leftover_dirty();
        assert_eq!(left.len(), 1);
        let m = left[0].1.clone().unwrap();
        assert_eq!(m.path, "/f8");
        assert_eq!(m.last_error.as_deref(), Some("upload failed"));
    }

    #[test]
    fn a_dirty_file_left_by_a_crash_names_its_path_without_a_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = Cache::open(dir.path(), 1 << 20).unwrap();
            let data = cache.create_dirty(&meta(4, 2), None).unwrap();
            std::fs::write(&data, b"unsent").unwrap();
            // No publish failed, so the record is on the data file itself (tmp is ext4 or
            // tmpfs here, both with user xattrs); the mount then dies without cleaning up.
            assert!(!data.with_extension("json").exists());
        }
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        let left = cache.leftover_dirty();
        assert_eq!(left.len(), 1);
        assert_eq!(std::fs::read(&left[0].0).unwrap(), b"unsent");
        let m = left[0].1.clone().expect("metadata of a crash leftover");
        assert_eq!((m.path.as_str(), m.file_id, m.token), ("/f4", 4, 2));
        assert!(m.last_error.is_none());
        // Once published, the clean copy carries no dirty record any more.
        cache.promote_dirty(&meta(4, 2), 5).unwrap();
        let clean = cache.lookup(4, 5).unwrap();
        assert!(xattr::get(&clean, META_XATTR).unwrap().is_none());
    }

    #[test]
    fn a_removed_cache_directory_is_recreated_on_use() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let cache = Cache::open(&root, 1 << 20).unwrap();
        put(&cache, 1, 1, 10);
        std::fs::remove_dir_all(&root).unwrap();
        // A stale index entry is forgotten, a download lands, a writer gets its dirty file.
        assert!(cache.lookup(1, 1).is_none());
        put(&cache, 1, 2, 10);
        assert!(cache.lookup(1, 2).is_some());
        let data = cache.create_dirty(&meta(3, 1), None).unwrap();
        assert!(data.exists());
        assert!(root.join(cache_state::STATE_FILE).exists());
        // Removed again between a download's start and its end: the rename still lands.
        let tmp = cache.temp_path();
        std::fs::write(&tmp, b"x").unwrap();
        std::fs::remove_dir_all(root.join("clean")).unwrap();
        cache.insert(4, 1, &tmp).unwrap();
        assert!(cache.contains(4, 1));
    }

    #[test]
    fn old_versions_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        put(&cache, 1, 1, 10);
        put(&cache, 1, 2, 10);
        cache.drop_other_versions(1, Some(2));
        assert!(!cache.contains(1, 1) && cache.contains(1, 2));
        assert_eq!(cache.clean_count(), 1);
    }
}
