//! Turning nameserver entries (and local dirty files) into the attributes the kernel sees.

use crate::inodes::ino_of;
use dfs_proto::names::{Entry, EntryKind};
use fuser::{FileAttr, FileType, INodeNo};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Preferred I/O size reported in `st_blksize`: `cp` and friends size their buffers by it,
/// and 1 MiB matches the mount's largest read and write requests.
pub const BLKSIZE: u32 = 1 << 20;

/// Who owns every file: DFS stores no owners, so files belong to the user who mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id shown for every file.
    pub uid: u32,
    /// Group id shown for every file.
    pub gid: u32,
}

impl Owner {
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

/// The kernel attributes of a nameserver entry.
pub fn attr_of(entry: &Entry, owner: Owner) -> FileAttr {
    let kind = match entry.kind {
        EntryKind::Dir => FileType::Directory,
        EntryKind::File => FileType::RegularFile,
    };
    build(
        ino_of(entry.id, &entry.path),
        kind,
        entry.size,
        entry.mode,
        time_of(entry.mtime_ns),
        owner,
    )
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
        };
        let owner = Owner { uid: 7, gid: 8 };
        let a = attr_of(&e, owner);
        assert_eq!(a.ino, INodeNo(42));
        assert_eq!(a.size, 1000);
        assert_eq!(a.blocks, 2);
        assert_eq!(a.perm, 0o644);
        assert_eq!(a.kind, FileType::RegularFile);
        assert_eq!(ns_of(a.mtime), 1_500_000_000_123);
        assert_eq!((a.uid, a.gid), (7, 8));
        assert_eq!(time_of(-5), UNIX_EPOCH);
    }
}
