//! The thin `fuser::Filesystem` adapter: every callback hands its work to the tokio runtime
//! and replies from the task, so one slow download never stalls `ls` in another terminal.

use crate::attr::{build, Owner};
use crate::fs::{AttrChanges, DfsFs, OpenMode};
use crate::passthrough::Passthrough;
use crate::xattr::{fit, Fitted, Xattrs};
use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Largest read and write request: whole-file I/O in few round trips.
pub const MAX_IO: u32 = 1 << 20;

/// The adapter; cheap to clone pieces of into tasks.
#[derive(Debug)]
pub struct Adapter {
    fs: Arc<DfsFs>,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    /// How long the kernel may resolve a name without asking (see `MountConfig`).
    entry_ttl: Duration,
    inflight: Arc<AtomicUsize>,
    pt: Arc<Passthrough>,
    xattrs: Arc<Xattrs>,
}

impl Adapter {
    /// An adapter running `fs` on `rt`, telling the kernel to cache attributes for `fs`'s
    /// `attr_timeout` and names for `entry_ttl`.
    pub fn new(fs: Arc<DfsFs>, rt: tokio::runtime::Handle, entry_ttl: Duration) -> Adapter {
        Adapter {
            ttl: fs.attr_timeout(),
            xattrs: Arc::new(Xattrs::new(fs.attr_timeout())),
            fs,
            rt,
            entry_ttl,
            inflight: Arc::new(AtomicUsize::new(0)),
            pt: Arc::new(Passthrough::new(false)),
        }
    }

    /// Asks the kernel for FUSE passthrough at init (see [`crate::passthrough`]).
    pub fn with_passthrough(mut self, requested: bool) -> Adapter {
        self.pt = Arc::new(Passthrough::new(requested));
        self
    }

    /// A counter of callbacks still running, to wait for at unmount.
    pub fn inflight(&self) -> Arc<AtomicUsize> {
        self.inflight.clone()
    }

    fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Arc<DfsFs>, Duration) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fs = self.fs.clone();
        let ttl = self.ttl;
        let inflight = self.inflight.clone();
        inflight.fetch_add(1, Ordering::AcqRel);
        self.rt.spawn(async move {
            work(fs, ttl).await;
            inflight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The caller of a request (its fsuid/fsgid): new files and directories are made for it.
fn caller(req: &Request) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_MAX_PAGES,
        ] {
            if config.add_capabilities(flag).is_err() {
                tracing::debug!(?flag, "kernel does not offer this capability");
            }
        }
        if self.pt.requested() {
            let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(2).is_ok();
            tracing::info!(granted, "FUSE passthrough");
            self.pt.set_active(granted);
            self.fs.set_in_place(granted);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        let entry_ttl = self.entry_ttl;
        self.spawn(move |fs, ttl| async move {
            match fs.lookup(parent.0, &name).await {
                Ok(attr) => reply.entry_with_ttls(&ttl, &entry_ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(attr) = self.fs.getattr_local(ino.0) {
            reply.attr(&self.ttl, &attr);
            return;
        }
        self.spawn(move |fs, ttl| async move {
            match fs.getattr(ino.0).await {
                Ok(attr) => reply.attr(&ttl, &attr),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // With default_permissions the kernel has already checked the caller may (only root
        // gives a file away; the owner may pick one of its own groups).
        let changes = AttrChanges {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_of),
            mtime: mtime.map(time_of),
        };
        self.spawn(move |fs, ttl| async move {
            match fs.setattr(ino.0, changes).await {
                Ok(attr) => reply.attr(&ttl, &attr),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = name.to_owned();
        let entry_ttl = self.entry_ttl;
        let owner = caller(req);
        self.spawn(move |fs, ttl| async move {
            match fs.mknod(parent.0, &name, mode & !umask, rdev, owner).await {
                Ok(attr) => reply.entry_with_ttls(&ttl, &entry_ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name.to_owned();
        let entry_ttl = self.entry_ttl;
        let owner = caller(req);
        self.spawn(move |fs, ttl| async move {
            match fs.mkdir(parent.0, &name, mode & !umask, owner).await {
                Ok(attr) => reply.entry_with_ttls(&ttl, &entry_ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let (name, target) = (link_name.to_owned(), target.to_owned());
        let entry_ttl = self.entry_ttl;
        let owner = caller(req);
        self.spawn(move |fs, ttl| async move {
            match fs.symlink(parent.0, &name, &target, owner).await {
                Ok(attr) => reply.entry_with_ttls(&ttl, &entry_ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.to_owned();
        let entry_ttl = self.entry_ttl;
        self.spawn(move |fs, ttl| async move {
            match fs.link(ino.0, newparent.0, &newname).await {
                Ok(attr) => reply.entry_with_ttls(&ttl, &entry_ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(move |fs, _| async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(e),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.spawn(move |fs, _| async move {
            match fs.unlink(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.spawn(move |fs, _| async move {
            match fs.rmdir(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        if exchange && no_replace
            || !(flags - RenameFlags::RENAME_EXCHANGE - RenameFlags::RENAME_NOREPLACE).is_empty()
        {
            reply.error(Errno::EINVAL);
            return;
        }
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.spawn(move |fs, _| async move {
            let done = if exchange {
                fs.exchange(parent.0, &name, newparent.0, &newname).await
            } else {
                fs.rename(parent.0, &name, newparent.0, &newname, no_replace)
                    .await
            };
            match done {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = OpenMode::from_flags(flags.0);
        let pt = self.pt.clone();
        self.spawn(move |fs, _| async move {
            match fs.open(ino.0, mode).await {
                Ok(opened) => pt.reply_open(&fs, reply, opened),
                Err(e) => reply.error(e),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.to_owned();
        let (pt, xattrs) = (self.pt.clone(), self.xattrs.clone());
        let owner = caller(req);
        self.spawn(move |fs, ttl| async move {
            match fs
                .create(parent.0, &name, mode & !umask, flags, owner)
                .await
            {
                Ok((attr, opened)) => {
                    xattrs.note_created(attr.ino.0);
                    pt.reply_create(&fs, reply, &ttl, &attr, opened)
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(move |fs, _| async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn(move |fs, _| async move {
            let written = if write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
                fs.write_back(fh.0, offset, &data).await
            } else {
                fs.write(fh.0, offset, &data).await
            };
            match written {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let pt = self.pt.clone();
        self.spawn(move |fs, _| async move {
            match pt.flush(&fs, fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Synchronous half first, before later requests are dispatched (see release_begin);
        // passthrough writes since the last flush (e.g. through mmap) are noticed here too.
        let changed = self.pt.release_begin(fh.0);
        let Some(ws) = self.fs.release_begin(fh.0) else {
            reply.ok();
            return;
        };
        self.spawn(move |fs, _| async move {
            if changed {
                fs.note_changed(&ws).await;
            }
            fs.release_finish(ws).await;
            reply.ok();
        });
    }

    /// No ioctl applies to a DFS file. Python's `open` asks `isatty` (`TCGETS`) of every file
    /// it opens: answered `ENOTTY`, as a local file does, without a warning per open.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let pt = self.pt.clone();
        self.spawn(move |fs, _| async move {
            match pt.fsync(&fs, fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let xattrs = self.xattrs.clone();
        self.spawn(move |fs, _| async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => {
                    if let Ok(items) = fs.dir_items(fh) {
                        xattrs.note_listing(&items);
                    }
                    reply.opened(FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let items = match self.fs.dir_items(fh.0) {
            Ok(items) => items,
            Err(e) => return reply.error(e),
        };
        let dots = [(ino.0, "."), (ino.0, "..")];
        let total = items.len() as u64 + 2;
        for off in offset..total {
            let full = if off < 2 {
                let (i, name) = dots[off as usize];
                reply.add(INodeNo(i), off + 1, FileType::Directory, name)
            } else {
                let item = &items[(off - 2) as usize];
                reply.add(INodeNo(item.ino), off + 1, item.attr.kind, &item.name)
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let items = match self.fs.dir_items(fh.0) {
            Ok(items) => items,
            Err(e) => return reply.error(e),
        };
        let owner = Owner::current();
        let dir = build(
            ino.0,
            FileType::Directory,
            0,
            0o755,
            SystemTime::UNIX_EPOCH,
            owner,
        );
        let total = items.len() as u64 + 2;
        for off in offset..total {
            let full = if off < 2 {
                let name = if off == 0 { "." } else { ".." };
                // The kernel takes no reference for "." and "..", and caches nothing for them.
                reply.add(ino, off + 1, name, &Duration::ZERO, &dir, Generation(0))
            } else {
                let item = &items[(off - 2) as usize];
                let full = reply.add(
                    INodeNo(item.ino),
                    off + 1,
                    &item.name,
                    &self.ttl,
                    &item.attr,
                    Generation(0),
                );
                if !full {
                    self.fs.note_lookup(ino.0, item);
                }
                full
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every namespace change is committed at the nameserver before its reply.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn(move |fs, _| async move {
            match fs.statfs().await {
                Ok((total, free)) => {
                    const BSIZE: u64 = 4096;
                    reply.statfs(
                        total / BSIZE,
                        free / BSIZE,
                        free / BSIZE,
                        1 << 32,
                        1 << 31,
                        BSIZE as u32,
                        255,
                        BSIZE as u32,
                    )
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.spawn(move |fs, _| async move {
            match fs.fallocate(fh.0, offset, length, mode).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (name, uid, xattrs) = (name.to_owned(), req.uid(), self.xattrs.clone());
        self.spawn(move |fs, _| async move {
            match xattrs.get(&fs, ino.0, &name, uid).await {
                Ok(value) => match fit(&value, size) {
                    Ok(sized) => reply_sized(sized, reply),
                    Err(e) => reply.error(e),
                },
                Err(e) => reply.error(e),
            }
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let (uid, xattrs) = (req.uid(), self.xattrs.clone());
        self.spawn(move |fs, _| async move {
            match xattrs.list(&fs, ino.0, uid).await {
                Ok(names) => match fit(&names, size) {
                    Ok(sized) => reply_sized(sized, reply),
                    Err(e) => reply.error(e),
                },
                Err(e) => reply.error(e),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 {
            // Only macOS resource forks use a position.
            reply.error(Errno::EINVAL);
            return;
        }
        let (name, value, uid, xattrs) = (
            name.to_owned(),
            value.to_vec(),
            req.uid(),
            self.xattrs.clone(),
        );
        self.spawn(move |fs, _| async move {
            match xattrs.set(&fs, ino.0, &name, &value, flags, uid).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (name, uid, xattrs) = (name.to_owned(), req.uid(), self.xattrs.clone());
        self.spawn(move |fs, _| async move {
            match xattrs.remove(&fs, ino.0, &name, uid).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission bits are checked by the kernel with -o default_permissions.
        reply.ok();
    }
}

fn reply_sized(sized: Fitted<'_>, reply: ReplyXattr) {
    match sized {
        Fitted::Len(len) => reply.size(len),
        Fitted::Data(data) => reply.data(data),
    }
}
