//! Turning nameserver entries (and local dirty files) into the attributes the kernel sees.

use crate::inodes::ino_of;
use dfs_proto::names::{Entry, EntryKind};
use fuser::{FileAttr, FileType, INodeNo};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Preferred I/O size reported in `st_blksize`: `cp` and friends size their buffers by it,
/// and 1 MiB matches the mount's largest read and write requests.
pub const BLKSIZE: u32 = 1 << 20;

/// Who owns a file, as the nameserver stores it (and as a new file is created for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    /// User id shown for every file.
    pub uid: u32,
    /// Group id shown for every file.
    pub gid: u32,
}

impl Owner {
    /// The owner stored for `entry`.
    pub fn of(entry: &Entry) -> Owner {
        Owner {
            uid: entry.uid,
            gid: entry.gid,
        }
    }

    /// The owner in the wire form of create requests.
    pub fn wire(self) -> dfs_proto::names::Owner {
        dfs_proto::names::Owner {
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// The user and group running the mount.
    pub fn current() -> Owner {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        unsafe {
            Owner {
                uid: libc::getuid(),
                gid: libc::getgid(),
            }
        }
    }
}

/// Nanoseconds since the epoch as a `SystemTime` (negative values clamp to the epoch).
pub fn time_of(ns: i64) -> SystemTime {
    u64::try_from(ns)
        .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns))
        .unwrap_or(UNIX_EPOCH)
}

/// A `SystemTime` as nanoseconds since the epoch (before the epoch clamps to 0).
pub fn ns_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The kernel's file type of an entry kind.
pub fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::Dir => FileType::Directory,
        EntryKind::File => FileType::RegularFile,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Fifo => FileType::NamedPipe,
        EntryKind::Socket => FileType::Socket,
        EntryKind::CharDevice => FileType::CharDevice,
        EntryKind::BlockDevice => FileType::BlockDevice,
    }
}

/// The entry kind of a kernel file type (for names learned through readdirplus).
pub fn entry_kind(kind: FileType) -> EntryKind {
    match kind {
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        FileType::NamedPipe => EntryKind::Fifo,
        FileType::Socket => EntryKind::Socket,
        FileType::CharDevice => EntryKind::CharDevice,
        FileType::BlockDevice => EntryKind::BlockDevice,
        _ => EntryKind::File,
    }
}

/// The kernel attributes of a nameserver entry: its stored owner, times, link count and
/// device number (servers older than owners send none: root, times equal to mtime).
pub fn attr_of(entry: &Entry) -> FileAttr {
    let mut attr = build(
        ino_of(entry.id, &entry.path),
        file_type(entry.kind),
        entry.size,
        entry.mode,
        time_of(entry.mtime_ns),
        Owner::of(entry),
    );
    attr.atime = time_of(entry.atime_ns.unwrap_or(entry.mtime_ns));
    attr.ctime = time_of(entry.ctime_ns.unwrap_or(entry.mtime_ns));
    attr.nlink = u32::try_from(entry.nlink.max(1)).unwrap_or(u32::MAX);
    attr.rdev = u32::try_from(entry.rdev).unwrap_or(0);
    attr
}

/// Attributes from parts (used for files with local, unpublished changes).
pub fn build(
    ino: u64,
    kind: FileType,
    size: u64,
    mode: u32,
    mtime: SystemTime,
    owner: Owner,
) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind,
        perm: (mode & 0o7777) as u16,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: owner.uid,
        gid: owner.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_proto::{Checksum, DfsPath};

    #[test]
    fn entries_become_attributes() {
        let e = Entry {
            id: 42,
            path: DfsPath::parse("/a").unwrap(),
            kind: EntryKind::File,
            size: 1000,
            mode: 0o100644,
            mtime_ns: 1_500_000_000_123,
            version: 3,
            checksum: Checksum::EMPTY,
            servers: vec![],
            locations: vec![],
            uid: 7,
            gid: 8,
            atime_ns: Some(1_000),
            ctime_ns: None,
            nlink: 1,
            target: None,
            rdev: 0,
            read_cap: None,
        };
        let a = attr_of(&e);
        assert_eq!(a.ino, INodeNo(42));
        assert_eq!(a.size, 1000);
        assert_eq!(a.blocks, 2);
        assert_eq!(a.perm, 0o644);
        assert_eq!(a.kind, FileType::RegularFile);
        assert_eq!(ns_of(a.mtime), 1_500_000_000_123);
        assert_eq!((a.uid, a.gid), (7, 8));
        assert_eq!(ns_of(a.atime), 1_000);
        assert_eq!(
            a.ctime, a.mtime,
            "an old server's entry: ctime shown as mtime"
        );
        assert_eq!(time_of(-5), UNIX_EPOCH);
        let dir = Entry {
            kind: EntryKind::Dir,
            nlink: 5,
            ..e.clone()
        };
        assert_eq!(attr_of(&dir).nlink, 5);
        let dev = Entry {
            kind: EntryKind::CharDevice,
            rdev: 0x0103,
            ..e
        };
        let a = attr_of(&dev);
        assert_eq!((a.kind, a.rdev), (FileType::CharDevice, 0x0103));
        for kind in [
            EntryKind::File,
            EntryKind::Dir,
            EntryKind::Symlink,
            EntryKind::Fifo,
            EntryKind::Socket,
            EntryKind::CharDevice,
            EntryKind::BlockDevice,
        ] {
            assert_eq!(entry_kind(file_type(kind)), kind);
        }
    }
}
