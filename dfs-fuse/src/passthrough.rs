//! FUSE passthrough (Linux 6.9+, CAP_SYS_ADMIN): once an open has its local file (the clean
//! cached version, or the dirty file of a write), the kernel reads and writes that file
//! directly and the daemon sees no `read`/`write` calls at all.
//!
//! Rules the kernel imposes, and how this module keeps them:
//! - one backing file per inode at a time: a backing id is shared by every handle of an inode
//!   whose local file is the same (same device and inode number); an open whose file differs
//!   from the live backing (a writer's dirty copy while readers still read the clean one) gets
//!   `FOPEN_DIRECT_IO` instead, i.e. the plain read/write path without the page cache;
//! - passthrough and page-cached opens of one inode may not mix: while passthrough is active
//!   every open is either passthrough or direct I/O, never page-cached;
//! - the daemon does not see writes, so "changed" is decided at flush/fsync/release, per
//!   file: when its local file's (size, mtime, ctime) differ from what they were when its
//!   first writer opened it (or at its last successful flush or fsync through any of its
//!   descriptors), the write is marked changed and published; otherwise nothing is.
//!   ext4's fine-grained timestamps (taken because we looked at them) make a same-size
//!   rewrite visible too;
//! - `fsync` is not passed through: the kernel still sends it to us, and it publishes.
//!
//! When passthrough is off (`-o nopassthrough`, not root, older kernel) every open takes the
//! plain path: 1 MiB requests through the daemon and `FOPEN_KEEP_CACHE` for unchanged files.

use crate::fs::{DfsFs, Opened};
use dashmap::DashMap;
use fuser::{BackingId, FileHandle, FopenFlags, ReplyCreate, ReplyOpen};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What a file looked like, to tell whether a passthrough writer changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(file: &File) -> Option<Stamp> {
    let m = file.metadata().ok()?;
    Some(Stamp {
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Identity of a local file: (device, inode number).
type FileKey = (u64, u64);

#[derive(Debug)]
struct PtHandle {
    /// Held so the kernel keeps the backing id until this handle is released.
    _backing: Arc<BackingId>,
    file: Arc<File>,
    ino: u64,
    writable: bool,
}

/// How one open is answered.
enum Choice {
    /// Kernel passthrough to this backing file.
    Backing(Arc<BackingId>),
    /// Through the daemon, bypassing the page cache (passthrough is live with another file).
    DirectIo,
    /// The plain path (passthrough off).
    Plain,
}

/// Passthrough state of a mount: which backing file each inode uses, per handle.
#[derive(Debug)]
pub struct Passthrough {
    /// Asked for by the mount options.
    requested: bool,
    /// Granted by the kernel at init and not refused since.
    active: AtomicBool,
    /// At least one backing id was ever registered (a later failure must not mix modes).
    used: AtomicBool,
    by_inode: Mutex<HashMap<u64, (FileKey, Weak<BackingId>)>>,
    handles: DashMap<u64, PtHandle>,
    /// Per inode written here: its local file as of the first writer's open or the last
    /// successful flush or fsync. Per file, not per descriptor: a write through one
    /// descriptor is published by a flush or fsync of another.
    stamps: DashMap<u64, Stamp>,
}

impl Passthrough {
    /// Passthrough state; `requested` is the mount option (on unless `-o nopassthrough`).
    pub fn new(requested: bool) -> Passthrough {
        Passthrough {
            requested,
            active: AtomicBool::new(false),
            used: AtomicBool::new(false),
            by_inode: Mutex::new(HashMap::new()),
            handles: DashMap::new(),
            stamps: DashMap::new(),
        }
    }

    /// Whether to ask the kernel for passthrough at init.
    pub fn requested(&self) -> bool {
        self.requested
    }

    /// Records the kernel's answer at init.
    pub fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Release);
    }

    /// Whether opens currently use passthrough.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn choose(
        &self,
        fs: &DfsFs,
        opened: Opened,
        open_backing: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> Choice {
        if !self.active() {
            return Choice::Plain;
        }
        let Some((ino, file, writable)) = fs.handle_file(opened.fh) else {
            return Choice::DirectIo;
        };
        let Ok(meta) = file.metadata() else {
            return Choice::DirectIo;
        };
        let key = (meta.dev(), meta.ino());
        let mut map = self.by_inode.lock().unwrap_or_else(|e| e.into_inner());
        let backing = match map.get(&ino).and_then(|(k, w)| Some((*k, w.upgrade()?))) {
            Some((k, b)) if k == key => b,
            Some(_) => return Choice::DirectIo,
            None => match open_backing(&file) {
                Ok(b) => {
                    self.used.store(true, Ordering::Release);
                    let b = Arc::new(b);
                    map.insert(ino, (key, Arc::downgrade(&b)));
                    b
                }
                Err(err) => {
                    if self.used.load(Ordering::Acquire) {
                        tracing::warn!(%err, ino, "passthrough backing failed; direct I/O for this open");
                        return Choice::DirectIo;
                    }
                    // Never worked (no CAP_SYS_ADMIN, no kernel support): plain path from now on.
                    tracing::warn!(%err, "FUSE passthrough unavailable; using the plain path");
                    self.set_active(false);
                    return Choice::Plain;
                }
            },
        };
        drop(map);
        if writable {
            if let Some(now) = stamp(&file) {
                self.stamps.entry(ino).or_insert(now);
            }
        }
        self.handles.insert(
            opened.fh,
            PtHandle {
                _backing: backing.clone(),
                file,
                ino,
                writable,
            },
        );
        Choice::Backing(backing)
    }

    /// Answers an `open` whose handle `fs` just created.
    pub fn reply_open(&self, fs: &DfsFs, reply: ReplyOpen, opened: Opened) {
        let fh = FileHandle(opened.fh);
        let base = base_flags(fs, opened.fh);
        match self.choose(fs, opened, |f| reply.open_backing(f)) {
            Choice::Backing(b) => reply.opened_passthrough(fh, base, &b),
            Choice::DirectIo => reply.opened(fh, base | FopenFlags::FOPEN_DIRECT_IO),
            Choice::Plain => reply.opened(fh, base | plain_flags(opened)),
        }
    }

    /// Answers a `create` whose handle `fs` just created.
    pub fn reply_create(
        &self,
        fs: &DfsFs,
        reply: ReplyCreate,
        ttl: &Duration,
        attr: &fuser::FileAttr,
        opened: Opened,
    ) {
        let fh = FileHandle(opened.fh);
        let g = fuser::Generation(0);
        match self.choose(fs, opened, |f| reply.open_backing(f)) {
            Choice::Backing(b) => {
                reply.created_passthrough(ttl, attr, g, fh, FopenFlags::empty(), &b)
            }
            Choice::DirectIo => reply.created(ttl, attr, g, fh, FopenFlags::FOPEN_DIRECT_IO),
            Choice::Plain => reply.created(ttl, attr, g, fh, plain_flags(opened)),
        }
    }

    /// Before a flush or release of `fh`: tells `fs` about writes the kernel made directly.
    /// Returns the stamp to record once the flush succeeded.
    async fn note_writes(&self, fs: &DfsFs, fh: u64) -> Option<(u64, Stamp)> {
        let (file, ino) = {
            let h = self.handles.get(&fh)?;
            if !h.writable {
                return None;
            }
            (h.file.clone(), h.ino)
        };
        let now = stamp(&file)?;
        let old = self.stamps.get(&ino).map(|s| *s);
        if old != Some(now) {
            fs.mark_changed(fh).await;
        }
        Some((ino, now))
    }

    /// Records what a successful flush or fsync published.
    fn published(&self, noted: Option<(u64, Stamp)>) {
        if let Some((ino, now)) = noted {
            if self.handles.iter().any(|h| h.ino == ino) {
                self.stamps.insert(ino, now);
            }
        }
    }

    /// `flush` with passthrough-aware change detection.
    pub async fn flush(&self, fs: &DfsFs, fh: u64) -> Result<(), fuser::Errno> {
        let noted = self.note_writes(fs, fh).await;
        let result = fs.flush(fh).await;
        if result.is_ok() {
            self.published(noted);
        }
        result
    }

    /// `fsync` with passthrough-aware change detection: writes the kernel made directly are
    /// published too.
    pub async fn fsync(&self, fs: &DfsFs, fh: u64) -> Result<(), fuser::Errno> {
        let noted = self.note_writes(fs, fh).await;
        let result = fs.fsync(fh).await;
        if result.is_ok() {
            self.published(noted);
        }
        result
    }

    /// The synchronous part of `release`: whether the handle's file changed since its last
    /// flush (writes the daemon never saw, e.g. through mmap), and forgets the handle.
    pub fn release_begin(&self, fh: u64) -> bool {
        let changed = match self.handles.get(&fh) {
            Some(h) if h.writable => {
                let old = self.stamps.get(&h.ino).map(|s| *s);
                stamp(&h.file).is_some_and(|now| old != Some(now))
            }
            _ => false,
        };
        if let Some((_, h)) = self.handles.remove(&fh) {
            if !self.handles.iter().any(|o| o.ino == h.ino && o.writable) {
                self.stamps.remove(&h.ino);
            }
            // Forget inodes whose last passthrough handle this was (the map holds weak refs).
            let mut map = self.by_inode.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, (_, w)| w.strong_count() > 0);
        }
        changed
    }

    /// Handles currently answered by passthrough (tests and logs).
    pub fn passthrough_handles(&self) -> usize {
        self.handles.len()
    }
}

/// Flags of every open: read-only handles need no FLUSH at close (it would do nothing but
/// cost a round trip to the daemon per close).
fn base_flags(fs: &DfsFs, fh: u64) -> FopenFlags {
    match fs.handle_file(fh) {
        Some((_, _, false)) => FopenFlags::FOPEN_NOFLUSH,
        _ => FopenFlags::empty(),
    }
}

/// Open flags of the plain path.
pub fn plain_flags(opened: Opened) -> FopenFlags {
    if opened.keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}
