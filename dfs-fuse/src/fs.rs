//! The filesystem logic: every FUSE operation as an async method returning `Result<_, Errno>`,
//! testable without the kernel. The adapter only translates arguments and replies.

use crate::attr::{attr_of, build, entry_kind, ns_of, Owner};
use crate::cache::{Cache, DirtyMeta};
use crate::inodes::{ino_of, InodeTable, ROOT_INO};
use crate::view::{Copy, Views};
use crate::writer::{publish_errno, WriteInner, WriteState};
use dashmap::DashMap;
use dfs_client::leases::Leases;
use dfs_client::remote::{pause_before_asking_again, Remote};
use dfs_proto::names::{
    CreateRequest, Entry, EntryKind, LinkRequest, MkdirRequest, MknodRequest, OpenWriteRequest,
    RenameRequest, SetAttrRequest, SymlinkRequest,
};
use dfs_proto::{ApiError, DfsPath, ErrorCode};
use fuser::{Errno, FileAttr, FileType};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Recorded as an inode's version when the kernel may hold content that was never published.
const UNKNOWN_VERSION: u64 = u64::MAX;
/// How long an open waits for the pending release of the file's last closed handle.
const SETTLE_WAIT: Duration = Duration::from_secs(5);
/// Settings of the filesystem layer.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// Owner shown where the nameserver named none (the root's fallback attributes).
    pub owner: Owner,
    /// Record access times with relatime rules on open for reading (else noatime).
    pub relatime: bool,
    /// How stale the kernel may show attributes (`attr_timeout`); `getattr` right after an
    /// open answers from that open's revalidation while it is younger than this.
    pub attr_timeout: Duration,
    /// `-o writeback`: close and fsync return once the content is durable in the cache; the
    /// publish follows in the background (see [`DfsFs::stage`]).
    pub writeback: bool,
}

/// The metadata changes of one `setattr` call (each `None` is left as it is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrChanges {
    /// chmod.
    pub mode: Option<u32>,
    /// chown: the new owner's uid.
    pub uid: Option<u32>,
    /// chown/chgrp: the new group.
    pub gid: Option<u32>,
    /// truncate.
    pub size: Option<u64>,
    /// utimensat: atime (UTIME_NOW already made a time by the adapter; UTIME_OMIT is None).
    pub atime: Option<SystemTime>,
    /// utimensat: mtime.
    pub mtime: Option<SystemTime>,
}

impl AttrChanges {
    /// Whether anything stored at the nameserver (not the size) changes.
    fn metadata(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }
}

/// A file an open creates (O_CREAT): where, with which mode, and for whom.
#[derive(Debug, Clone)]
struct NewFile {
    parent: u64,
    path: DfsPath,
    mode: u32,
    exclusive: bool,
    owner: Owner,
}

/// How a file is opened, decoded from `open(2)` flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenMode {
    /// Opened for writing (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC or O_APPEND).
    pub write: bool,
    /// O_TRUNC: start from empty content, download nothing.
    pub truncate: bool,
    /// O_APPEND: every write goes to the end.
    pub append: bool,
}

impl OpenMode {
    /// Decodes raw `open(2)` flags.
    pub fn from_flags(flags: i32) -> OpenMode {
        let acc = flags & libc::O_ACCMODE;
        let truncate = flags & libc::O_TRUNC != 0;
        let append = flags & libc::O_APPEND != 0;
        let write = acc == libc::O_WRONLY
            || acc == libc::O_RDWR
            || truncate
            || append
            || flags & libc::O_CREAT != 0;
        OpenMode {
            write,
            truncate: truncate && write,
            append,
        }
    }
}

/// The result of an open: the handle number and whether the kernel may keep its page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// File handle to pass back in read/write/flush/release.
    pub fh: u64,
    /// The kernel's cached pages are still valid (the cached version did not change).
    pub keep_cache: bool,
}

/// One directory entry of a listing snapshot.
#[derive(Debug, Clone)]
pub struct DirItem {
    /// Inode number.
    pub ino: u64,
    /// Name within the directory.
    pub name: String,
    /// Attributes at listing time.
    pub attr: FileAttr,
    /// Whether it had extended attributes at listing time (see [`crate::xattr`]).
    pub has_xattrs: bool,
}

#[derive(Debug)]
struct Handle {
    ino: u64,
    file: Arc<File>,
    /// Shared state when this handle (or another on the inode) writes.
    write: Option<Arc<WriteState>>,
    writable: bool,
    /// O_APPEND: writes of this descriptor go to the end of the local file.
    append: bool,
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<WriteState>>>>;

/// Sends "attributes of this inode changed" to the kernel (set by the adapter).
pub type Invalidator = Arc<dyn Fn(u64) + Send + Sync>;

/// The mounted filesystem.
pub struct DfsFs {
    remote: Arc<Remote>,
    cache: Arc<Cache>,
    leases: Leases,
    config: FsConfig,
    inodes: Mutex<InodeTable>,
    handles: DashMap<u64, Arc<Handle>>,
    dirs: DashMap<u64, Arc<Vec<DirItem>>>,
    writes: DashMap<u64, Slot>,
    /// The write state of each inode written here, readable without waiting: a slot is
    /// locked while a state is created or wound up (which may take a whole upload), and
    /// attributes and reads must never fall back to the published file meanwhile.
    live: DashMap<u64, Arc<WriteState>>,
    /// The local copy every descriptor of an open inode reads (one view per inode).
    views: Views,
    /// The version whose content the kernel's page cache may hold per inode: set only where
    /// that cache is dropped or filled with that version (open, publish), so an open notices
    /// when the kernel must forget its pages.
    versions: DashMap<u64, u64>,
    /// Attributes of regular files as the revalidation at their last open saw them (when,
    /// attributes, version), for the `fstat` that usually follows an open.
    opened_attrs: DashMap<u64, (Instant, FileAttr, u64)>,
    next_fh: AtomicU64,
    open_writers: AtomicUsize,
    /// Newer versions arrive in the file open descriptors read, in place (passthrough: the
    /// kernel keeps one backing file per inode while any descriptor is open).
    in_place: AtomicBool,
    invalidator: OnceLock<Invalidator>,
}

impl std::fmt::Debug for DfsFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DfsFs")
            .field("cache", &self.cache.root())
            .field("handles", &self.handles.len())
            .finish_non_exhaustive()
    }
}

fn errno(err: &ApiError) -> Errno {
    Errno::from_i32(err.errno())
}

fn io_errno(err: &std::io::Error) -> Errno {
    Errno::from_i32(err.raw_os_error().unwrap_or(libc::EIO))
}

/// What a write or truncate returns when its lease is gone or cannot be re-taken.
fn lease_errno(err: &ApiError) -> Errno {
    match err.code {
        ErrorCode::LeaseExpired => Errno::EIO,
        _ => errno(err),
    }
}

/// Opens a local cache file for reading and writing.
fn open_rw(path: &std::path::Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

/// Whether an open file is the file at `path` (same device and inode).
fn same_file(file: &File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn name_str(name: &std::ffi::OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

impl DfsFs {
    /// A filesystem over `remote`, caching in `cache`, writing under `leases`.
    pub fn new(remote: Arc<Remote>, cache: Arc<Cache>, leases: Leases, config: FsConfig) -> DfsFs {
        DfsFs {
            remote,
            cache,
            leases,
            config,
            inodes: Mutex::new(InodeTable::new()),
            handles: DashMap::new(),
            dirs: DashMap::new(),
            writes: DashMap::new(),
            live: DashMap::new(),
            views: Views::new(),
            versions: DashMap::new(),
            opened_attrs: DashMap::new(),
            next_fh: AtomicU64::new(1),
            open_writers: AtomicUsize::new(0),
            in_place: AtomicBool::new(false),
            invalidator: OnceLock::new(),
        }
    }

    /// Makes newer versions arrive in the open copy in place (see [`DfsFs::refresh_in_place`]);
    /// set when the kernel granted passthrough.
    pub fn set_in_place(&self, on: bool) {
        self.in_place.store(on, Ordering::Release);
    }

    /// Installs the kernel notifier used when a file changed elsewhere.
    pub fn set_invalidator(&self, f: Invalidator) {
        let _ = self.invalidator.set(f);
    }

    /// How long the kernel may cache attributes: the TTL of every attribute reply, and the
    /// age up to which `getattr` answers from an open's revalidation.
    pub fn attr_timeout(&self) -> Duration {
        self.config.attr_timeout
    }

    /// The cache (for tests and the daemon's startup report).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cluster clients.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The lease manager (tests of the publish counter).
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Files currently open for writing on this mount.
    pub fn open_writers(&self) -> usize {
        self.open_writers.load(Ordering::Relaxed)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, InodeTable> {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of a known inode (ENOENT when the kernel's inode is no longer known here).
    pub(crate) fn path_of(&self, ino: u64) -> Result<DfsPath, Errno> {
        self.table().path(ino).ok_or(Errno::ENOENT)
    }

    /// The path of `ino`; for a file whose name known here was removed or replaced while
    /// another hard link keeps it, asks the nameserver where it is now (by id), so that
    /// the kernel's other names for the inode keep working.
    pub(crate) async fn locate(&self, ino: u64) -> Result<DfsPath, Errno> {
        if let Ok(path) = self.path_of(ino) {
            return Ok(path);
        }
        if ino == ROOT_INO || matches!(self.table().kind(ino), None | Some(EntryKind::Dir)) {
            return Err(Errno::ENOENT);
        }
        match self.remote.names.stat_id(crate::inodes::id_of(ino)).await {
            Ok(entry) if entry.kind != EntryKind::Dir && ino_of(entry.id, &entry.path) == ino => {
                self.table().alias(ino, entry.path.clone());
                Ok(entry.path)
            }
            Ok(_) => Err(Errno::ENOENT),
            Err(err) => Err(errno(&err)),
        }
    }

    fn child_path(&self, parent: u64, name: &std::ffi::OsStr) -> Result<DfsPath, Errno> {
        let name = name_str(name)?;
        self.path_of(parent)?.join(name).map_err(|e| errno(&e))
    }

    /// EROFS on a read-only mount.
    pub(crate) fn check_writable(&self) -> Result<(), Errno> {
        if self.config.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    fn remember(&self, parent: u64, entry: &Entry, counted: bool) -> FileAttr {
        let ino = ino_of(entry.id, &entry.path);
        self.table()
            .insert(parent, entry.path.name(), ino, entry.kind, counted);
        self.visible_attr(ino, entry)
    }

    /// What the kernel may be told about `entry`: a file written here shows its dirty file,
    /// and a file open here on another version shows that copy, so that the kernel's one
    /// size per inode always matches what reads of it return.
    fn visible_attr(&self, ino: u64, entry: &Entry) -> FileAttr {
        if entry.kind == EntryKind::File {
            if let Some(ws) = self.write_state(ino) {
                return self.attr_of_write(&ws);
            }
            if let Some(attr) = self.views.attr_unless(ino, Some(entry.version)) {
                return attr;
            }
        }
        attr_of(entry)
    }

    /// Records a kernel lookup done through readdirplus.
    pub fn note_lookup(&self, parent: u64, item: &DirItem) {
        let kind = entry_kind(item.attr.kind);
        self.table()
            .insert(parent, &item.name, item.ino, kind, true);
    }

    fn write_state(&self, ino: u64) -> Option<Arc<WriteState>> {
        self.live.get(&ino).map(|ws| ws.clone())
    }

    /// The local file a descriptor reads: the dirty file while the inode is written here,
    /// else the inode's newest local copy (never a copy of its own: see [`crate::view`]).
    fn file_for_read(&self, handle: &Handle) -> Arc<File> {
        if let Some(ws) = self.write_state(handle.ino) {
            return ws.file.clone();
        }
        self.views
            .file(handle.ino)
            .unwrap_or_else(|| handle.file.clone())
    }

    /// After the last close of a file, its write state lives on until the release (already
    /// started by [`DfsFs::release_begin`]) has published, kept or discarded it. A new open
    /// waits for that instead of joining a state with no handle left, so it starts from the
    /// published version, never from content whose close reported an error. Bounded; a
    /// state that still has handles (dup, fork) is joined at once, as a local file would be.
    async fn settle(&self, ino: u64) {
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let Some(slot) = self.writes.get(&ino).map(|s| s.clone()) else {
                return;
            };
            let releasing = {
                let guard = slot.lock().await;
                guard
                    .as_ref()
                    .is_some_and(|ws| ws.handles.load(Ordering::Acquire) == 0)
            };
            if !releasing || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn attr_of_write(&self, ws: &WriteState) -> FileAttr {
        let meta = ws.file.metadata().ok();
        let size = meta.as_ref().map_or(0, |m| m.len());
        let mtime = meta
            .and_then(|m| m.modified().ok())
            .unwrap_or_else(SystemTime::now);
        let mut attr = build(
            ws.ino,
            FileType::RegularFile,
            size,
            ws.mode(),
            mtime,
            ws.owner(),
        );
        let (atime, ctime) = ws.times();
        attr.atime = crate::attr::time_of(atime);
        attr.ctime = crate::attr::time_of(ctime);
        attr.nlink = u32::try_from(ws.nlink.load(Ordering::Acquire)).unwrap_or(u32::MAX);
        // POSIX: fstat of an open file that was unlinked shows no links left.
        if ws.unlinked.load(Ordering::Acquire) {
            attr.nlink = 0;
        }
        attr
    }

    fn invalidate(&self, ino: u64) -> Option<tokio::task::JoinHandle<()>> {
        let f = self.invalidator.get()?.clone();
        // The notifier writes to /dev/fuse: do it from a task of its own, never inline.
        Some(tokio::task::spawn_blocking(move || f(ino)))
    }

    // ---- namespace -------------------------------------------------------------------

    /// `lookup`: the attributes of `parent/name`, counting one kernel reference.
    pub async fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> Result<FileAttr, Errno> {
        let path = self.child_path(parent, name)?;
        // Bind first: a guard in an `if let` scrutinee would live through the body, and the
        // body locks the table again (a self-deadlock that froze every worker thread).
        let known = self.table().child(parent, path.name());
        if let Some(ino) = known {
            if let Some(ws) = self.write_state(ino) {
                let attr = self.attr_of_write(&ws);
                self.table()
                    .insert(parent, path.name(), ino, EntryKind::File, true);
                return Ok(attr);
            }
        }
        match self.remote.names.stat(&path).await {
            Ok(entry) => Ok(self.remember(parent, &entry, true)),
            Err(err) => {
                if err.code == ErrorCode::NotFound {
                    self.table().remove_name(parent, path.name());
                }
                Err(errno(&err))
            }
        }
    }

    /// `forget`: the kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.table().forget(ino, n);
    }

    /// `getattr`: local attributes while this mount writes the file, else the nameserver's.
    pub async fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        if let Some(attr) = self.getattr_local(ino) {
            return Ok(attr);
        }
        // An open file whose name is gone (here or elsewhere) keeps its attributes: the
        // kernel asks for them on reads past its cached size, and ENOENT would fail the read.
        let gone = || self.views.attr_unless(ino, None).ok_or(Errno::ENOENT);
        let Ok(path) = self.locate(ino).await else {
            return gone();
        };
        match self.remote.names.stat(&path).await {
            Ok(entry) if ino_of(entry.id, &entry.path) == ino => Ok(self.visible_attr(ino, &entry)),
            Ok(_) => gone(),
            Err(err) if err.code == ErrorCode::NotFound => gone(),
            Err(err) => Err(errno(&err)),
        }
    }

    /// `getattr` when it needs no request: a file this mount is writing (local attributes),
    /// or one whose open just revalidated it. Cheap and non-blocking, so the adapter answers
    /// it on the FUSE thread without a hop to the async workers.
    pub fn getattr_local(&self, ino: u64) -> Option<FileAttr> {
        if let Some(ws) = self.write_state(ino) {
            return Some(self.attr_of_write(&ws));
        }
        self.attr_from_open(ino)
    }

    /// The attributes the last open's revalidation fetched, while younger than
    /// `attr_timeout` and still of the version this mount knows: `fstat` after `open` (what
    /// `std::fs::read`, `cat` and most readers do) then costs no second round trip, and
    /// never shows attributes older than the kernel's own cache could.
    fn attr_from_open(&self, ino: u64) -> Option<FileAttr> {
        let (at, attr, version) = *self.opened_attrs.get(&ino)?;
        let current = self.versions.get(&ino).map(|v| *v);
        if at.elapsed() < self.config.attr_timeout && current == Some(version) {
            return Some(attr);
        }
        self.opened_attrs.remove(&ino);
        None
    }

    /// `setattr`: truncate (size), chmod (mode), chown (uid, gid), utimensat (atime, mtime).
    /// Whether the caller may is the kernel's to check (`default_permissions`); the
    /// nameserver stores what it is sent.
    pub async fn setattr(&self, ino: u64, changes: AttrChanges) -> Result<FileAttr, Errno> {
        let AttrChanges {
            mode, size, mtime, ..
        } = changes;
        if changes.metadata() || size.is_some() {
            self.check_writable()?;
        }
        self.opened_attrs.remove(&ino);
        let path = self.locate(ino).await?;
        let ws = self.write_state(ino);
        tracing::debug!(ino, ?size, write_state = ws.is_some(), "setattr");
        if let Some(size) = size {
            match &ws {
                Some(ws) => {
                    let mut inner = ws.inner.lock().await;
                    let path = self.current_path(ws);
                    ws.ensure_lease(&mut inner, &path, &self.leases, &self.remote)
                        .await
                        .map_err(|e| lease_errno(&e))?;
                    ws.file.set_len(size).map_err(|e| io_errno(&e))?;
                    inner.mark_changed();
                    ws.note_change();
                }
                None => self.truncate_path(ino, size).await?,
            }
        }
        if changes.metadata() {
            let req = SetAttrRequest {
                path: path.clone(),
                mode: mode.map(|m| m & 0o7777),
                mtime_ns: mtime.map(ns_of),
                atime_ns: changes.atime.map(ns_of),
                uid: changes.uid,
                gid: changes.gid,
                kill_suid: false,
                access: false,
            };
            let entry = self
                .remote
                .names
                .setattr(&req)
                .await
                .map_err(|e| errno(&e))?;
            if let Some(ws) = &ws {
                ws.set_meta(&entry);
            }
            if let (Some(ws), Some(t)) = (&ws, mtime) {
                ws.inner.lock().await.mtime_ns = Some(ns_of(t));
                let _ = ws.file.set_modified(t);
            }
        }
        match &ws {
            Some(ws) => Ok(self.attr_of_write(ws)),
            None => self.getattr(ino).await,
        }
    }

    /// truncate(2) with no open handle: lease, open-write, publish the new length, release.
    async fn truncate_path(&self, ino: u64, size: u64) -> Result<(), Errno> {
        tracing::debug!(
            ino,
            size,
            "truncate with no write open here: publishing it alone"
        );
        let opened = self
            .open(
                ino,
                OpenMode {
                    write: true,
                    truncate: size == 0,
                    append: false,
                },
            )
            .await?;
        let result = async {
            let handle = self.handle(opened.fh)?;
            let ws = handle.write.clone().ok_or(Errno::EIO)?;
            {
                let mut inner = ws.inner.lock().await;
                ws.file.set_len(size).map_err(|e| io_errno(&e))?;
                inner.mark_changed();
                ws.note_change();
            }
            self.flush(opened.fh).await
        }
        .await;
        self.release(opened.fh).await;
        result
    }

    /// `opendir`: snapshots the listing so readdir offsets stay stable.
    pub async fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        let path = self.locate(ino).await?;
        let (entries, with_xattrs) = self
            .remote
            .names
            .list_with_xattrs(&path)
            .await
            .map_err(|e| errno(&e))?;
        let with_xattrs: std::collections::HashSet<String> = with_xattrs.into_iter().collect();
        let mut items = Vec::with_capacity(entries.len());
        for entry in &entries {
            let e_ino = ino_of(entry.id, &entry.path);
            let attr = self.visible_attr(e_ino, entry);
            self.table()
                .insert(ino, entry.path.name(), e_ino, entry.kind, false);
            items.push(DirItem {
                ino: e_ino,
                name: entry.path.name().to_owned(),
                attr,
                has_xattrs: with_xattrs.contains(entry.path.name()),
            });
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.insert(fh, Arc::new(items));
        Ok(fh)
    }

    /// The snapshot of an open directory.
    pub fn dir_items(&self, fh: u64) -> Result<Arc<Vec<DirItem>>, Errno> {
        self.dirs.get(&fh).map(|d| d.clone()).ok_or(Errno::EBADF)
    }

    /// `releasedir`.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(&fh);
    }

    /// The attributes of a directory itself (for "." in readdirplus).
    pub async fn dir_attr(&self, ino: u64) -> FileAttr {
        match self.getattr(ino).await {
            Ok(a) => a,
            Err(_) => build(
                ino,
                FileType::Directory,
                0,
                0o755,
                SystemTime::UNIX_EPOCH,
                self.config.owner,
            ),
        }
    }

    /// `readlink`: a symlink's target, as stored.
    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let path = self.locate(ino).await?;
        let entry = self.remote.names.stat(&path).await.map_err(|e| errno(&e))?;
        match entry.target {
            Some(target) if entry.kind == EntryKind::Symlink => Ok(target.into_bytes()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `symlink`: a link entry at the nameserver, owned by the caller.
    pub async fn symlink(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        target: &std::path::Path,
        owner: Owner,
    ) -> Result<FileAttr, Errno> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        let target = target.to_str().ok_or(Errno::EINVAL)?.to_owned();
        let entry = self
            .remote
            .names
            .symlink(&SymlinkRequest {
                path,
                target,
                owner: Some(owner.wire()),
            })
            .await
            .map_err(|e| errno(&e))?;
        Ok(self.remember(parent, &entry, true))
    }

    /// `mkdir`, for the caller `owner`.
    pub async fn mkdir(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        owner: Owner,
    ) -> Result<FileAttr, Errno> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        let entry = self
            .remote
            .names
            .mkdir_with(&MkdirRequest {
                path,
                mode: Some(mode & 0o7777),
                owner: Some(owner.wire()),
            })
            .await
            .map_err(|e| errno(&e))?;
        Ok(self.remember(parent, &entry, true))
    }

    /// `rmdir`.
    pub async fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> Result<(), Errno> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        self.remote
            .names
            .rmdir(&path)
            .await
            .map_err(|e| errno(&e))?;
        self.table().remove_name(parent, path.name());
        Ok(())
    }

    /// `unlink`: removes the name; open handles keep their local copy, and a file being
    /// written here is not published any more. Only the file the nameserver really removed
    /// is marked: the name may have come to mean another file (renamed on another mount)
    /// since this mount last looked it up, and that file's write must go on.
    pub async fn unlink(&self, parent: u64, name: &std::ffi::OsStr) -> Result<(), Errno> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        let known = self.table().child(parent, path.name());
        let removed = self
            .remote
            .names
            .unlink(&path)
            .await
            .map_err(|e| errno(&e))?;
        self.table().remove_name(parent, path.name());
        if let Some(ino) = known {
            self.opened_attrs.remove(&ino);
        }
        let target = match removed.id {
            Some(id) => Some((ino_of(id, &path), id)),
            None => known.map(|ino| (ino, ino)),
        };
        if let Some((ino, id)) = target {
            self.opened_attrs.remove(&ino);
            if let Some(rest) = removed.remaining {
                // Another hard link keeps the file: only this name went.
                self.table().alias(ino, rest);
                if let Some(ws) = self.write_state(ino) {
                    ws.nlink.store(removed.nlink, Ordering::Release);
                }
                return Ok(());
            }
            if let Some(ws) = self.write_state(ino) {
                ws.unlinked.store(true, Ordering::Release);
            }
            // Descriptors still open keep the unlinked copy they read.
            self.cache.drop_other_versions(id, None);
        }
        Ok(())
    }

    /// `link`: one more name, `newparent/newname`, for the file `ino` (same inode, so one
    /// page cache, one write state and one lease path for every name here).
    pub async fn link(
        &self,
        ino: u64,
        newparent: u64,
        newname: &std::ffi::OsStr,
    ) -> Result<FileAttr, Errno> {
        self.check_writable()?;
        let path = self.locate(ino).await?;
        let new_path = self.child_path(newparent, newname)?;
        let entry = self
            .remote
            .names
            .link(&LinkRequest {
                path,
                new_path: new_path.clone(),
            })
            .await
            .map_err(|e| errno(&e))?;
        self.opened_attrs.remove(&ino);
        if let Some(ws) = self.write_state(ino) {
            ws.nlink.store(entry.nlink, Ordering::Release);
        }
        Ok(self.remember(newparent, &entry, true))
    }

    /// `rename`: atomic at the nameserver; `no_replace` is RENAME_NOREPLACE.
    pub async fn rename(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        self.check_writable()?;
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        let req = RenameRequest {
            from: from.clone(),
            to: to.clone(),
            no_replace,
            exchange: false,
        };
        self.remote
            .names
            .rename(&req)
            .await
            .map_err(|e| errno(&e))?;
        self.table()
            .rename(parent, from.name(), new_parent, to.name());
        // A rename changes ctime (and may replace a file): rare enough to forget them all.
        self.opened_attrs.clear();
        Ok(())
    }

    /// `renameat2(RENAME_EXCHANGE)`: swaps two existing names atomically at the nameserver,
    /// then here. A file written here follows its inode, so its publish lands under its new
    /// name.
    pub async fn exchange(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
    ) -> Result<(), Errno> {
        self.check_writable()?;
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        let req = RenameRequest {
            from: from.clone(),
            to: to.clone(),
            no_replace: false,
            exchange: true,
        };
        self.remote
            .names
            .rename(&req)
            .await
            .map_err(|e| errno(&e))?;
        self.table()
            .exchange(parent, from.name(), new_parent, to.name());
        self.opened_attrs.clear();
        Ok(())
    }

    /// `statfs`: (total bytes, free bytes) of the cluster, replication accounted for.
    pub async fn statfs(&self) -> Result<(u64, u64), Errno> {
        let cap = self.remote.capacity().await.map_err(|e| errno(&e))?;
        Ok((cap.total, cap.free))
    }

    // ---- files -----------------------------------------------------------------------

    fn handle(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        self.handles.get(&fh).map(|h| h.clone()).ok_or(Errno::EBADF)
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, Arc::new(handle));
        fh
    }

    /// Makes sure the clean copy of `entry`'s current version is cached; returns its path
    /// and whether it was already there.
    async fn fetch(&self, entry: &Entry) -> Result<(PathBuf, bool), ApiError> {
        if let Some(path) = self.cache.lookup(entry.id, entry.version) {
            return Ok((path, true));
        }
        let tmp = self.cache.temp_path();
        if let Err(err) = self.remote.download(entry, &tmp).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
        // An open copy that takes the new version in place keeps its name until then.
        let ino = ino_of(entry.id, &entry.path);
        if !(self.in_place.load(Ordering::Acquire) && self.views.current(ino).is_some()) {
            self.cache.drop_other_versions(entry.id, None);
        }
        let path = self.cache.insert(entry.id, entry.version, &tmp)?;
        Ok((path, false))
    }

    /// `open`: revalidates with one stat, downloads the current version unless cached, and
    /// for writing takes the lease and registers it with the nameserver.
    pub async fn open(&self, ino: u64, mode: OpenMode) -> Result<Opened, Errno> {
        if mode.write {
            self.check_writable()?;
            return self.open_write(ino, None, mode).await;
        }
        self.settle(ino).await;
        if let Some(ws) = self.write_state(ino) {
            // Another handle here is writing: read what it wrote, like a local file.
            let base = ws.base_copy();
            self.views.hold(ino, || base);
            let fh = self.add_handle(Handle {
                ino,
                file: ws.file.clone(),
                write: Some(ws),
                writable: false,
                append: false,
            });
            return Ok(Opened {
                fh,
                keep_cache: true,
            });
        }
        let path = self.locate(ino).await?;
        let (entry, clean, was_cached) = self.revalidate(ino, &path).await?;
        let clean = self.refresh_in_place(ino, &entry).unwrap_or(clean);
        if entry.kind != EntryKind::File {
            // FIFOs and devices are opened by the kernel itself; never download for them.
            return Err(Errno::EINVAL);
        }
        let seen = (Instant::now(), attr_of(&entry), entry.version);
        if self.config.relatime {
            self.touch_atime(&path, &entry).await;
        }
        // Read-write, so that a writer here can adopt it in place (see `adopt_view`), also
        // as the kernel's passthrough backing file, which needs write access for writers.
        let file = open_rw(&clean)
            .or_else(|_| File::open(&clean))
            .map_err(|e| io_errno(&e))?;
        let file = Arc::new(file);
        // Every descriptor of the inode moves to this copy before the kernel is told to drop
        // its pages, so no read refills them from an older copy afterwards.
        self.views.open_newest(
            ino,
            Copy {
                file: file.clone(),
                version: entry.version,
                mode: entry.mode,
                mtime_ns: entry.mtime_ns,
                owner: Owner::of(&entry),
            },
        );
        let changed = self
            .versions
            .insert(ino, entry.version)
            .is_some_and(|old| old != entry.version);
        if changed {
            if let Some(task) = self.invalidate(ino) {
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        }
        self.opened_attrs.insert(ino, seen);
        let fh = self.add_handle(Handle {
            ino,
            file,
            write: None,
            writable: false,
            append: false,
        });
        Ok(Opened {
            fh,
            keep_cache: was_cached && !changed,
        })
    }

    /// With passthrough, a newer version than the one open descriptors read is copied into
    /// their file in place, which then becomes its clean copy and the view of that version;
    /// returns that file's path.
    /// A read running meanwhile may see part of each version (as with any in-place rewrite
    /// of a local file); the plain path switches files between reads instead.
    fn refresh_in_place(&self, ino: u64, entry: &Entry) -> Option<PathBuf> {
        if !self.in_place.load(Ordering::Acquire) || self.write_state(ino).is_some() {
            return None;
        }
        let (file, version) = self.views.current(ino)?;
        if version == entry.version || version == UNKNOWN_VERSION {
            return None;
        }
        let old = self.cache.clean_path(entry.id, version);
        if !same_file(&file, &old) {
            return None;
        }
        match self
            .cache
            .replace_in_place(entry.id, version, entry.version, &file)
        {
            Ok(()) => {
                self.cache
                    .drop_other_versions(entry.id, Some(entry.version));
                self.views.replace(
                    ino,
                    Copy {
                        file,
                        version: entry.version,
                        mode: entry.mode,
                        mtime_ns: entry.mtime_ns,
                        owner: Owner::of(entry),
                    },
                );
                Some(self.cache.clean_path(entry.id, entry.version))
            }
            Err(err) => {
                tracing::warn!(%err, ino, "could not bring the open copy up to date in place");
                None
            }
        }
    }

    /// Asks for the current version of `path` and makes sure it is cached. A version whose
    /// every copy is gone (deleted right after a newer publish) is asked for again: the
    /// file exists, only the version this open first saw does not any more.
    async fn revalidate(&self, ino: u64, path: &DfsPath) -> Result<(Entry, PathBuf, bool), Errno> {
        let mut attempt = 0;
        loop {
            let entry = self.remote.names.stat(path).await.map_err(|e| errno(&e))?;
            self.check_same_file(ino, &entry)?;
            match self.fetch(&entry).await {
                Ok((clean, cached)) => return Ok((entry, clean, cached)),
                Err(err) if err.code == ErrorCode::NotFound => {
                    let Some(pause) = pause_before_asking_again(attempt) else {
                        return Err(errno(&err));
                    };
                    attempt += 1;
                    tracing::debug!(%path, version = entry.version, %err, "version gone everywhere; asking again");
                    tokio::time::sleep(pause).await;
                }
                Err(err) => return Err(errno(&err)),
            }
        }
    }

    fn check_same_file(&self, ino: u64, entry: &Entry) -> Result<(), Errno> {
        if entry.kind == EntryKind::Dir {
            return Err(Errno::EISDIR);
        }
        if ino_of(entry.id, &entry.path) != ino {
            // The name now refers to another file: ESTALE makes the kernel look it up again.
            return Err(Errno::ESTALE);
        }
        Ok(())
    }

    /// `create`: O_CREAT through the kernel's create call; the new file is open for writing
    /// and, when new, owned by `owner`.
    pub async fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        flags: i32,
        owner: Owner,
    ) -> Result<(FileAttr, Opened), Errno> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        let exclusive = flags & libc::O_EXCL != 0;
        let known = self.table().child(parent, path.name());
        if let Some(ino) = known {
            self.settle(ino).await;
            if self.write_state(ino).is_some() {
                if exclusive {
                    return Err(Errno::EEXIST);
                }
                let mut m = OpenMode::from_flags(flags);
                m.write = true;
                let opened = self.open_write(ino, None, m).await?;
                let attr = self.getattr(ino).await?;
                self.table()
                    .insert(parent, path.name(), ino, EntryKind::File, true);
                return Ok((attr, opened));
            }
        }
        let mut m = OpenMode::from_flags(flags);
        m.write = true;
        let create = NewFile {
            parent,
            path: path.clone(),
            mode: mode & 0o7777,
            exclusive,
            owner,
        };
        let opened = self.open_write(0, Some(create), m).await?;
        let handle = self.handle(opened.fh)?;
        let ino = handle.ino;
        let attr = match &handle.write {
            Some(ws) => self.attr_of_write(ws),
            None => self.getattr(ino).await?,
        };
        self.table()
            .insert(parent, path.name(), ino, EntryKind::File, true);
        Ok((attr, opened))
    }

    /// Opens for writing: joins this inode's write state or creates it (lease, open-write,
    /// dirty file). `create` says what to create for O_CREAT.
    async fn open_write(
        &self,
        ino: u64,
        create: Option<NewFile>,
        mode: OpenMode,
    ) -> Result<Opened, Errno> {
        let path = match &create {
            Some(new) => new.path.clone(),
            None => self.locate(ino).await?,
        };
        // For create the inode is learned from the nameserver; look for a state afterwards.
        let slot_ino = if create.is_some() { None } else { Some(ino) };
        if let Some(ino) = slot_ino {
            self.settle(ino).await;
            let slot = self.writes.entry(ino).or_default().clone();
            let guard = slot.lock().await;
            if let Some(ws) = guard.as_ref() {
                return self.join_write(ws.clone(), mode).await;
            }
            drop(guard);
        }
        let lease = Arc::new(self.leases.acquire(&path).await.map_err(|e| errno(&e))?);
        let req = OpenWriteRequest {
            path: path.clone(),
            token: lease.token,
            create: create.as_ref().map(|c| c.mode),
            exclusive: create.as_ref().is_some_and(|c| c.exclusive),
            exclude: Vec::new(),
            owner: create.as_ref().map(|c| c.owner.wire()),
            lease: Some(lease.signed()),
        };
        let opened = match self.remote.names.open_write(&req).await {
            Ok(o) => o,
            Err(err) => {
                lease.release(&self.leases).await;
                return Err(errno(&err));
            }
        };
        let entry = opened.entry;
        if entry.kind == EntryKind::Dir {
            lease.release(&self.leases).await;
            return Err(Errno::EISDIR);
        }
        let requested = ino;
        let ino = ino_of(entry.id, &entry.path);
        if let Some(new) = &create {
            self.remember(new.parent, &entry, false);
        } else if ino != requested {
            lease.release(&self.leases).await;
            return Err(Errno::ESTALE);
        }
        let slot = self.writes.entry(ino).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(ws) = guard.as_ref() {
            // Raced with another open of the same file on this mount: share its state. The
            // lockserver gives one session the same lease twice; only a different one is ours.
            let ws = ws.clone();
            drop(guard);
            let theirs = ws.inner.lock().await.lease.as_ref().map(|l| l.token);
            if theirs != Some(lease.token) {
                lease.release(&self.leases).await;
            }
            return self.join_write(ws, mode).await;
        }
        let meta = DirtyMeta {
            path: path.to_string(),
            file_id: entry.id,
            base_version: entry.version,
            token: lease.token,
            last_error: None,
            pending: false,
        };
        if self.in_place.load(Ordering::Acquire) && self.views.current(ino).is_some() {
            if let Err(e) = self.fetch(&entry).await {
                lease.release(&self.leases).await;
                return Err(errno(&e));
            }
            self.refresh_in_place(ino, &entry);
        }
        let (data_path, file) = match self.adopt_view(ino, &entry, &meta, mode.truncate) {
            Some(adopted) => adopted,
            None => {
                let base = if mode.truncate || entry.size == 0 {
                    None
                } else {
                    match self.fetch(&entry).await {
                        Ok((p, _)) => Some(p),
                        Err(e) => {
                            lease.release(&self.leases).await;
                            return Err(errno(&e));
                        }
                    }
                };
                let data_path = match self.cache.create_dirty(&meta, base.as_deref()) {
                    Ok(p) => p,
                    Err(e) => {
                        lease.release(&self.leases).await;
                        return Err(io_errno(&e));
                    }
                };
                match open_rw(&data_path) {
                    Ok(f) => (data_path, Arc::new(f)),
                    Err(e) => {
                        lease.release(&self.leases).await;
                        self.cache.discard_dirty(&meta);
                        return Err(io_errno(&e));
                    }
                }
            }
        };
        let _ = file.set_modified(crate::attr::time_of(entry.mtime_ns));
        let changed_version = self
            .versions
            .insert(ino, entry.version)
            .is_some_and(|old| old != entry.version);
        let ws = Arc::new(WriteState {
            ino,
            file_id: entry.id,
            meta,
            data_path,
            file,
            handles: AtomicUsize::new(0),
            unlinked: AtomicBool::new(false),
            nlink: std::sync::atomic::AtomicU64::new(entry.nlink.max(1)),
            mode: AtomicU32::new(entry.mode),
            uid: AtomicU32::new(entry.uid),
            gid: AtomicU32::new(entry.gid),
            atime_ns: AtomicI64::new(entry.atime_ns.unwrap_or(entry.mtime_ns)),
            // O_TRUNC of a non-empty file is a content change now.
            ctime_ns: AtomicI64::new(if mode.truncate && entry.size > 0 {
                ns_of(SystemTime::now())
            } else {
                entry.ctime_ns.unwrap_or(entry.mtime_ns)
            }),
            inner: tokio::sync::Mutex::new(WriteInner {
                lease: Some(lease),
                targets: opened.targets,
                write_cap: opened.write_cap.map(dfs_client::write::IssuedCap::new),
                base_version: entry.version,
                seq: 0,
                // O_TRUNC of a non-empty file is a change even with no write after it.
                changed: mode.truncate && entry.size > 0,
                published: None,
                mtime_ns: None,
                last_entry: None,
                failed: false,
            }),
        });
        tracing::debug!(%path, ino, token = ws.meta.token, base = entry.version, size = entry.size, "write state created");
        *guard = Some(ws.clone());
        self.live.insert(ino, ws.clone());
        self.open_writers.fetch_add(1, Ordering::Relaxed);
        // Joined before the slot is unlocked: a state without handles means "being released".
        let joined = self
            .join_write(
                ws,
                OpenMode {
                    truncate: false,
                    ..mode
                },
            )
            .await;
        drop(guard);
        if changed_version {
            if let Some(task) = self.invalidate(ino) {
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        }
        let mut opened = joined?;
        opened.keep_cache = false;
        Ok(opened)
    }

    /// When descriptors of `ino` are open on the clean copy of exactly the version a writer
    /// starts from, that copy becomes the dirty file in place: they read the writes as on a
    /// local disk, nothing is copied, and with passthrough the kernel's one backing file of
    /// the inode stays the file every descriptor uses.
    fn adopt_view(
        &self,
        ino: u64,
        entry: &Entry,
        meta: &DirtyMeta,
        truncate: bool,
    ) -> Option<(PathBuf, Arc<File>)> {
        let file = self.views.file_of_version(ino, entry.version)?;
        let clean = self.cache.lookup(entry.id, entry.version)?;
        if !same_file(&file, &clean) {
            return None;
        }
        let data_path = match self.cache.adopt_dirty(meta, entry.version) {
            Ok(p) => p,
            Err(err) => {
                tracing::warn!(%err, "could not write the open copy in place; copying it");
                return None;
            }
        };
        if truncate {
            if let Err(err) = file.set_len(0) {
                tracing::warn!(%err, "truncating the adopted copy failed");
            }
        }
        Some((data_path, file))
    }

    async fn join_write(&self, ws: Arc<WriteState>, mode: OpenMode) -> Result<Opened, Errno> {
        if mode.truncate {
            let mut inner = ws.inner.lock().await;
            if ws.local_size() > 0 {
                ws.file.set_len(0).map_err(|e| io_errno(&e))?;
                inner.mark_changed();
                ws.note_change();
            }
        }
        ws.handles.fetch_add(1, Ordering::AcqRel);
        self.views.hold(ws.ino, || ws.base_copy());
        let fh = self.add_handle(Handle {
            ino: ws.ino,
            file: ws.file.clone(),
            write: Some(ws),
            writable: true,
            append: mode.append,
        });
        Ok(Opened {
            fh,
            keep_cache: true,
        })
    }

    /// `read`: from the local copy.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let handle = self.handle(fh)?;
        let file = self.file_for_read(&handle);
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_errno(&e)),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// `write`: to the dirty file; fails with EIO once the lease is lost.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.write_to(fh, offset, data, false).await
    }

    /// `write` of pages the kernel writes back from its page cache (a shared mapping): they
    /// belong at their own offset, also through an O_APPEND descriptor.
    pub async fn write_back(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.write_to(fh, offset, data, true).await
    }

    async fn write_to(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        write_back: bool,
    ) -> Result<u32, Errno> {
        let handle = self.handle(fh)?;
        let ws = match (&handle.write, handle.writable) {
            (Some(ws), true) => ws.clone(),
            _ => return Err(Errno::EBADF),
        };
        let mut inner = ws.inner.lock().await;
        let path = self.current_path(&ws);
        ws.ensure_lease(&mut inner, &path, &self.leases, &self.remote)
            .await
            .map_err(|e| {
                tracing::debug!(%path, %e, "write refused: no lease");
                lease_errno(&e)
            })?;
        // The kernel places an O_APPEND write at the size it knows, which lags the local file
        // when an open here just moved the file to a newer version (the kernel does not ask
        // for attributes before such a write): the local end is the truth. It then also
        // drops the pages it filled at its own offset, and its size.
        let mut at = offset;
        let mut stale_kernel_size = false;
        if handle.append && !write_back {
            at = ws.local_size();
            stale_kernel_size = at != offset;
        }
        ws.file.write_all_at(data, at).map_err(|e| io_errno(&e))?;
        inner.mark_changed();
        ws.note_change();
        drop(inner);
        if stale_kernel_size {
            tracing::debug!(
                ino = ws.ino,
                kernel = offset,
                local = at,
                "append placed at the local end"
            );
            // Not awaited: the kernel holds the written pages locked until this reply.
            let _ = self.invalidate(ws.ino);
        }
        Ok(data.len() as u32)
    }

    fn current_path(&self, ws: &WriteState) -> DfsPath {
        self.table()
            .path(ws.ino)
            .or_else(|| DfsPath::parse(&ws.meta.path).ok())
            .unwrap_or_else(DfsPath::root)
    }

    async fn publish(&self, ws: &WriteState, give_back_lease: bool) -> Result<(), Errno> {
        let mut inner = ws.inner.lock().await;
        let path = self.current_path(ws);
        ws.publish(&mut inner, &path, &self.leases, &self.remote, &self.cache)
            .await
            .map_err(|e| Errno::from_i32(publish_errno(&e)))?;
        if let Some(entry) = &inner.last_entry {
            self.versions.insert(ws.ino, entry.version);
        }
        // The only handle was closed and everything is published: give the lease back now,
        // so another client can write at once (a later write on a dup'd fd re-takes it).
        if give_back_lease && ws.handles.load(Ordering::Acquire) <= 1 && !inner.changed {
            if let Some(lease) = inner.lease.take() {
                lease.release(&self.leases).await;
            }
        }
        Ok(())
    }

    /// `fallocate` on a descriptor open for writing, applied to the local dirty copy: mode 0
    /// (allocate, growing the size), `FALLOC_FL_KEEP_SIZE` (allocate only) and
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` (the range reads as zeros); any other
    /// mode is EOPNOTSUPP. Allocation only reserves local disk: the published version is the
    /// content, uploaded whole on close, so only a size change or a punched hole is a change.
    pub async fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        if !matches!(mode, 0 | libc::FALLOC_FL_KEEP_SIZE | PUNCH) {
            return Err(Errno::EOPNOTSUPP);
        }
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        if length == 0 || i64::try_from(end).is_err() {
            return Err(Errno::EINVAL);
        }
        let handle = self.handle(fh)?;
        let ws = match (&handle.write, handle.writable) {
            (Some(ws), true) => ws.clone(),
            _ => return Err(Errno::EBADF),
        };
        let mut inner = ws.inner.lock().await;
        let path = self.current_path(&ws);
        ws.ensure_lease(&mut inner, &path, &self.leases, &self.remote)
            .await
            .map_err(|e| lease_errno(&e))?;
        let before = ws.local_size();
        crate::falloc::apply(&ws.file, mode, offset, length).map_err(|e| io_errno(&e))?;
        if mode == PUNCH || ws.local_size() != before {
            inner.mark_changed();
            // fallocate(2) changes mtime and ctime when it changes the file, as write does.
            ws.note_change();
            let _ = ws.file.set_modified(std::time::SystemTime::now());
        }
        Ok(())
    }

    /// `flush` (every close): publishes unsent changes; 0 only once they are committed (with
    /// `-o writeback`: once they are durable in the cache).
    pub async fn flush(&self, fh: u64) -> Result<(), Errno> {
        let handle = self.handle(fh)?;
        tracing::debug!(fh, ino = handle.ino, writable = handle.writable, "flush");
        match (&handle.write, handle.writable) {
            (Some(ws), true) if self.config.writeback => self.stage(ws).await,
            (Some(ws), true) => self.publish(ws, true).await,
            _ => Ok(()),
        }
    }

    /// `fsync`: publishes too (there is no durable state short of a published version), or
    /// with `-o writeback` makes the content durable in the cache.
    pub async fn fsync(&self, fh: u64) -> Result<(), Errno> {
        let handle = self.handle(fh)?;
        match (&handle.write, handle.writable) {
            (Some(ws), true) if self.config.writeback => self.stage(ws).await,
            (Some(ws), true) => self.publish(ws, false).await,
            _ => Ok(()),
        }
    }

    /// Writeback: makes the changes of `ws` durable in the cache with a pending record, so
    /// they are published even if this mount or its machine dies before the background
    /// publish (at release) is done. The lease stays held until then.
    async fn stage(&self, ws: &WriteState) -> Result<(), Errno> {
        let inner = ws.inner.lock().await;
        if !inner.changed || ws.unlinked.load(Ordering::Acquire) {
            return Ok(());
        }
        if inner.lease_lost() {
            return Err(Errno::EIO);
        }
        let (cache, meta, file) = (self.cache.clone(), ws.meta.clone(), ws.file.clone());
        tokio::task::spawn_blocking(move || cache.stage_dirty(&meta, &file))
            .await
            .map_err(|_| Errno::EIO)?
            .map_err(|e| {
                tracing::error!(err = %e, "writeback: cannot make the changes durable in the cache");
                io_errno(&e)
            })
    }

    /// Publishes a write at release; with `-o writeback` transient failures (a server down,
    /// the lease lost meanwhile) are retried until the publish succeeds or meets a conflict
    /// (someone else published first: `stale`), since close already returned 0.
    async fn publish_at_release(
        &self,
        ws: &WriteState,
        inner: &mut WriteInner,
        path: &DfsPath,
    ) -> Result<(), ApiError> {
        let mut tries = 0;
        loop {
            let result = ws
                .publish(inner, path, &self.leases, &self.remote, &self.cache)
                .await;
            match result {
                Err(err) if self.config.writeback && dfs_client::writeback::retries(&err) => {
                    tracing::warn!(%path, %err, "writeback: publish failed; retrying");
                    if err.code == ErrorCode::LeaseExpired {
                        // Taken again at the retry, which checks nobody published meanwhile.
                        inner.lease = None;
                    }
                    tokio::time::sleep(dfs_client::writeback::pause(tries)).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Publishes, in the background, the files an earlier run of this mount closed with
    /// `-o writeback` and did not get to publish (see [`crate::writeback`]).
    pub async fn publish_pending(&self, pending: Vec<(PathBuf, DirtyMeta)>) {
        crate::writeback::publish_pending(&self.leases, &self.remote, &self.cache, pending).await
    }

    /// `release`: the last write handle of an inode publishes what is left, turns the dirty
    /// file into the clean copy, and gives the lease back.
    pub async fn release(&self, fh: u64) {
        if let Some(ws) = self.release_begin(fh) {
            self.release_finish(ws).await;
        }
    }

    /// The synchronous half of `release`: forgets the handle and, for the last write handle
    /// of an inode, returns the write state [`DfsFs::release_finish`] must wind up. The
    /// adapter runs it on the FUSE thread, before later requests are dispatched, so an open
    /// that follows a close finds no handle left and waits for the release instead of
    /// joining the old state (whose lease may be gone and whose base may be stale).
    pub fn release_begin(&self, fh: u64) -> Option<Arc<WriteState>> {
        let (_, handle) = self.handles.remove(&fh)?;
        self.views.release(handle.ino);
        let (Some(ws), true) = (&handle.write, handle.writable) else {
            return None;
        };
        if ws.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        Some(ws.clone())
    }

    /// The rest of `release` for the last write handle: publishes what is left, turns the
    /// dirty file into the clean copy (or keeps it after a failure), gives the lease back.
    pub async fn release_finish(&self, ws: Arc<WriteState>) {
        let ws = &ws;
        let Some(slot) = self.writes.get(&ws.ino).map(|s| s.clone()) else {
            return;
        };
        let mut guard = slot.lock().await;
        if ws.handles.load(Ordering::Acquire) != 0 {
            return; // reopened meanwhile
        }
        let mut inner = ws.inner.lock().await;
        let path = self.current_path(ws);
        let published = if inner.failed {
            // The close that tried this content already returned the error: publishing it now
            // would turn a reported failure into a silent success. It stays in dirty/.
            Err(())
        } else {
            self.publish_at_release(ws, &mut inner, &path)
                .await
                .map_err(|err| {
                    if self.config.writeback {
                        tracing::error!(%path, %err, "writeback: the changes closed here cannot be published; kept in the cache's dirty/ directory");
                        self.cache.unstage_dirty(&ws.meta, &err.to_string());
                    }
                })
        };
        if let Some(lease) = inner.lease.take() {
            lease.release(&self.leases).await;
        }
        if ws.unlinked.load(Ordering::Acquire) {
            self.cache.discard_dirty(&ws.meta);
        } else if published.is_err() {
            // A later writer under the same lease token must not overwrite the kept copy.
            if let Some(kept) = self.cache.set_aside_dirty(&ws.meta) {
                tracing::warn!(%path, file = %kept.display(), "unpublished changes kept for recovery");
            }
        } else {
            match inner.published {
                Some(version) => {
                    // Descriptors still open here read what was just published.
                    self.views.replace(ws.ino, ws.copy_as(version));
                    if let Err(err) = self.cache.promote_dirty(&ws.meta, version) {
                        tracing::warn!(%err, "could not keep the published file in the cache");
                        self.cache.discard_dirty(&ws.meta);
                    }
                }
                // Nothing changed: the file still holds its base version (and may be the
                // copy open descriptors read, adopted in place): it is that clean copy again.
                None => {
                    let base = ws.meta.base_version;
                    if let Err(err) = self.cache.promote_dirty(&ws.meta, base) {
                        tracing::debug!(%err, "could not keep the unchanged file in the cache");
                        self.cache.discard_dirty(&ws.meta);
                    }
                }
            }
        }
        if published.is_err() {
            // Descriptors still open keep reading the content they saw (with its own size);
            // the next open starts again from the published version.
            self.views.replace(ws.ino, ws.copy_as(UNKNOWN_VERSION));
            // The kernel still caches the unpublished size and pages: make the next open see
            // a changed version so it drops them and rereads the published one.
            self.versions.insert(ws.ino, UNKNOWN_VERSION);
            if let Some(task) = self.invalidate(ws.ino) {
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        }
        *guard = None;
        self.live.remove(&ws.ino);
        drop(inner);
        drop(guard);
        drop(slot);
        self.writes
            .remove_if(&ws.ino, |_, s| Arc::strong_count(s) == 1);
        self.open_writers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Publishes every file still open for writing (at unmount) and gives the leases back.
    pub async fn shutdown(&self) {
        let fhs: Vec<u64> = self.handles.iter().map(|h| *h.key()).collect();
        for fh in fhs {
            self.release(fh).await;
        }
    }

    /// Whether the root is reachable: used to check the nameserver before mounting.
    pub async fn check_root(&self) -> Result<FileAttr, ApiError> {
        let entry = self.remote.names.stat(&DfsPath::root()).await?;
        let mut attr = attr_of(&entry);
        attr.ino = fuser::INodeNo(ROOT_INO);
        Ok(attr)
    }

    /// The local file behind a handle: (inode, file, writable), for kernel passthrough.
    pub fn handle_file(&self, fh: u64) -> Option<(u64, Arc<File>, bool)> {
        let h = self.handles.get(&fh)?;
        Some((h.ino, h.file.clone(), h.writable && h.write.is_some()))
    }

    /// Marks a write state changed: passthrough writes never reach `write`, so release
    /// notices them by the file's size and times.
    pub async fn note_changed(&self, ws: &Arc<WriteState>) {
        ws.inner.lock().await.changed = true;
        ws.note_change();
    }

    /// Marks the write state behind `fh` changed (passthrough writes noticed at flush).
    pub async fn mark_changed(&self, fh: u64) {
        if let Ok(handle) = self.handle(fh) {
            if let (Some(ws), true) = (&handle.write, handle.writable) {
                ws.inner.lock().await.changed = true;
                ws.note_change();
            }
        }
    }

    /// `mknod`: an empty regular file (not opened), or a FIFO, socket or device node as a
    /// namespace entry; `mode` carries the type bits.
    pub async fn mknod(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        rdev: u32,
        owner: Owner,
    ) -> Result<FileAttr, Errno> {
        self.check_writable()?;
        let path = self.child_path(parent, name)?;
        let names = &self.remote.names;
        let entry = match EntryKind::special_of_mode(mode) {
            Some(kind) => {
                names
                    .mknod(&MknodRequest {
                        path,
                        kind,
                        mode: mode & 0o7777,
                        rdev: u64::from(rdev),
                        owner: Some(owner.wire()),
                    })
                    .await
            }
            None if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 => {
                names
                    .create(&CreateRequest {
                        path,
                        mode: Some(mode & 0o7777),
                        exclusive: true,
                        owner: Some(owner.wire()),
                    })
                    .await
            }
            None => return Err(Errno::EINVAL),
        }
        .map_err(|e| errno(&e))?;
        Ok(self.remember(parent, &entry, true))
    }

    /// relatime: records this read's access time when the stored one is not newer than the
    /// last change (or is a day old). Best effort: a failed update never fails the open.
    async fn touch_atime(&self, path: &DfsPath, entry: &Entry) {
        const DAY_NS: i64 = 86_400 * 1_000_000_000;
        let now = ns_of(SystemTime::now());
        let atime = entry.atime_ns.unwrap_or(entry.mtime_ns);
        let changed = entry.ctime_ns.unwrap_or(entry.mtime_ns).max(entry.mtime_ns);
        if atime > changed && now - atime < DAY_NS {
            return;
        }
        let req = SetAttrRequest {
            path: path.clone(),
            mode: None,
            mtime_ns: None,
            atime_ns: Some(now),
            uid: None,
            gid: None,
            kill_suid: false,
            access: true,
        };
        if let Err(err) = self.remote.names.setattr(&req).await {
            tracing::debug!(%err, %path, "could not record the access time");
        }
    }
}
