//! One coherent view of each open file per mount: every descriptor of an inode reads the
//! newest local copy this mount has of it, as every descriptor of a file on a local disk does.
//!
//! The kernel keeps one page cache and one size per inode, shared by every descriptor of the
//! file. A descriptor that kept reading the version it was opened on would feed that shared
//! cache with superseded bytes (a later open would read them, and a later write publish them
//! over a newer version), and its short reads would shrink the kernel's idea of the size (a
//! `SIGBUS` in `mmap`, `EOF` inside the file). So the local copy belongs to the inode, not to
//! the descriptor: an open that fetched a newer version moves every descriptor of the inode
//! to it, and while the file is written here they all read the dirty file (see `fs.rs`).

use crate::attr::{build, time_of, Owner};
use dashmap::DashMap;
use fuser::{FileAttr, FileType};
use std::fs::File;
use std::sync::Arc;

/// The local copy the descriptors of one inode read.
#[derive(Debug)]
struct View {
    file: Arc<File>,
    version: u64,
    /// Permission bits and mtime of that version, for attributes answered from the copy.
    mode: u32,
    mtime_ns: i64,
    /// Its owner, for the same attributes.
    owner: Owner,
    /// Open descriptors of the inode on this mount.
    handles: usize,
}

/// The views of every inode with open descriptors on this mount.
#[derive(Debug, Default)]
pub struct Views {
    map: DashMap<u64, View>,
}

/// What a view is opened on: a local copy of one version.
#[derive(Debug, Clone)]
pub struct Copy {
    /// The local file.
    pub file: Arc<File>,
    /// The version it holds.
    pub version: u64,
    /// Permission bits of that version.
    pub mode: u32,
    /// Its modification time.
    pub mtime_ns: i64,
    /// Its owner.
    pub owner: Owner,
}

impl Views {
    /// No open files.
    pub fn new() -> Views {
        Views::default()
    }

    /// A descriptor opens `ino` on `copy`, just revalidated: it becomes what every descriptor
    /// of the inode reads. Returns whether the version changed for descriptors already open.
    pub fn open_newest(&self, ino: u64, copy: Copy) -> bool {
        let mut changed = false;
        self.map
            .entry(ino)
            .and_modify(|v| {
                changed = v.version != copy.version;
                v.file = copy.file.clone();
                v.version = copy.version;
                v.mode = copy.mode;
                v.owner = copy.owner;
                v.mtime_ns = copy.mtime_ns;
                v.handles += 1;
            })
            .or_insert_with(|| View {
                file: copy.file.clone(),
                version: copy.version,
                mode: copy.mode,
                owner: copy.owner,
                mtime_ns: copy.mtime_ns,
                handles: 1,
            });
        changed
    }

    /// A descriptor joins `ino` (a file being written here: its reads go to the dirty file
    /// anyway); `copy` is the view when no descriptor had one yet.
    pub fn hold(&self, ino: u64, copy: impl FnOnce() -> Copy) {
        self.map
            .entry(ino)
            .and_modify(|v| v.handles += 1)
            .or_insert_with(|| {
                let c = copy();
                View {
                    file: c.file,
                    version: c.version,
                    mode: c.mode,
                    owner: c.owner,
                    mtime_ns: c.mtime_ns,
                    handles: 1,
                }
            });
    }

    /// A write on this mount was published as `copy`: descriptors still open read it.
    pub fn replace(&self, ino: u64, copy: Copy) {
        if let Some(mut v) = self.map.get_mut(&ino) {
            v.file = copy.file;
            v.version = copy.version;
            v.mode = copy.mode;
            v.owner = copy.owner;
            v.mtime_ns = copy.mtime_ns;
        }
    }

    /// A descriptor of `ino` was released; the view goes with the last one.
    pub fn release(&self, ino: u64) {
        self.map.remove_if_mut(&ino, |_, v| {
            v.handles = v.handles.saturating_sub(1);
            v.handles == 0
        });
    }

    /// The copy descriptors of `ino` read and its version, when it has open descriptors.
    pub fn current(&self, ino: u64) -> Option<(Arc<File>, u64)> {
        self.map.get(&ino).map(|v| (v.file.clone(), v.version))
    }

    /// The copy descriptors of `ino` read, when it is a copy of exactly `version`.
    pub fn file_of_version(&self, ino: u64, version: u64) -> Option<Arc<File>> {
        let v = self.map.get(&ino)?;
        (v.version == version).then(|| v.file.clone())
    }

    /// The copy descriptors of `ino` read, when it has open descriptors.
    pub fn file(&self, ino: u64) -> Option<Arc<File>> {
        self.map.get(&ino).map(|v| v.file.clone())
    }

    /// Attributes of the open copy of `ino` when it has open descriptors and `current` (what
    /// the nameserver says now, `None` when the file is gone) is not the version they read:
    /// the kernel must keep a size that matches what reads return.
    pub fn attr_unless(&self, ino: u64, current: Option<u64>) -> Option<FileAttr> {
        let v = self.map.get(&ino)?;
        if current == Some(v.version) {
            return None;
        }
        let size = v.file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut attr = build(
            ino,
            FileType::RegularFile,
            size,
            v.mode,
            time_of(v.mtime_ns),
            v.owner,
        );
        if current.is_none() {
            // POSIX: fstat of an open file whose last name is gone shows no links.
            attr.nlink = 0;
        }
        Some(attr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn copy(content: &[u8], version: u64) -> Copy {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        Copy {
            file: Arc::new(f),
            version,
            mode: 0o644,
            mtime_ns: 0,
            owner: Owner { uid: 1, gid: 1 },
        }
    }

    #[test]
    fn newest_open_moves_every_descriptor() {
        let views = Views::new();
        assert!(!views.open_newest(7, copy(b"old", 1)));
        assert!(views.open_newest(7, copy(b"newer", 2)));
        let f = views.file(7).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 5);
        views.release(7);
        assert!(views.file(7).is_some(), "one descriptor still open");
        views.release(7);
        assert!(views.file(7).is_none());
    }

    #[test]
    fn attributes_follow_the_open_copy_until_it_is_current() {
        let views = Views::new();
        views.open_newest(9, copy(b"abcd", 3));
        assert!(views.attr_unless(9, Some(3)).is_none());
        let attr = views.attr_unless(9, Some(4)).unwrap();
        assert_eq!(attr.size, 4);
        assert_eq!(attr.nlink, 1);
        assert_eq!((attr.uid, attr.gid), (1, 1));
        assert_eq!(views.attr_unless(9, None).unwrap().nlink, 0);
        assert!(views.attr_unless(10, None).is_none());
    }

    #[test]
    fn hold_keeps_an_existing_copy() {
        let views = Views::new();
        views.open_newest(5, copy(b"x", 1));
        views.hold(5, || copy(b"yyyy", 2));
        assert_eq!(views.file(5).unwrap().metadata().unwrap().len(), 1);
    }
}
