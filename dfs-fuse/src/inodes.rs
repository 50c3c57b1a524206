//! The inode table: kernel inode numbers <-> (parent, name), so a path can be rebuilt for
//! every request. The inode number is the nameserver's stable entry id (it survives renames);
//! the root is always 1.

use dfs_proto::names::EntryKind;
use dfs_proto::{DfsPath, FileId};
use std::collections::HashMap;

/// The kernel's root inode number.
pub const ROOT_INO: u64 = 1;

/// Entry ids that would collide with the root (0 and 1) are moved above this bit.
const REMAP_BIT: u64 = 1 << 62;

/// The inode number of a nameserver entry: its id, except the root is 1.
pub fn ino_of(id: FileId, path: &DfsPath) -> u64 {
    if path.is_root() {
        ROOT_INO
    } else if id <= ROOT_INO {
        id | REMAP_BIT
    } else {
        id
    }
}

/// The nameserver's file id of inode `ino` (the inverse of [`ino_of`]).
pub fn id_of(ino: u64) -> FileId {
    ino & !REMAP_BIT
}

#[derive(Debug, Clone)]
struct Node {
    parent: u64,
    name: String,
    kind: EntryKind,
    /// Kernel lookups not yet forgotten; the node is dropped when it reaches 0.
    lookups: u64,
}

/// Known inodes. Not thread-safe by itself: the filesystem wraps it in a mutex and holds it
/// only for map operations, never across a network call.
#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    children: HashMap<(u64, String), u64>,
    /// Where a file whose known name was removed still is (another of its hard links): the
    /// kernel may use the inode through that other name without a new lookup.
    aliases: HashMap<u64, DfsPath>,
}

impl Default for InodeTable {
    fn default() -> Self {
        InodeTable::new()
    }
}

impl InodeTable {
    /// A table holding only the root.
    pub fn new() -> InodeTable {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Node {
                parent: ROOT_INO,
                name: String::new(),
                kind: EntryKind::Dir,
                lookups: 1,
            },
        );
        InodeTable {
            nodes,
            children: HashMap::new(),
            aliases: HashMap::new(),
        }
    }

    /// The full path of `ino`, or `None` when it is unknown (forgotten or never looked up).
    pub fn path(&self, ino: u64) -> Option<DfsPath> {
        self.walk(ino).or_else(|| self.aliases.get(&ino).cloned())
    }

    /// Records that `ino`, whose known name was just removed, is still reachable at `path`
    /// (another hard link of the file).
    pub fn alias(&mut self, ino: u64, path: DfsPath) {
        self.aliases.insert(ino, path);
    }

    fn walk(&self, ino: u64) -> Option<DfsPath> {
        let mut names = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let node = self.nodes.get(&cur)?;
            names.push(node.name.as_str());
            cur = node.parent;
            if names.len() > 4096 {
                return None; // a cycle would be a bug; refuse rather than loop
            }
        }
        let mut path = DfsPath::root();
        for name in names.iter().rev() {
            path = path.join(name).ok()?;
        }
        Some(path)
    }

    /// The kind of `ino`, when known.
    pub fn kind(&self, ino: u64) -> Option<EntryKind> {
        self.nodes.get(&ino).map(|n| n.kind)
    }

    /// The child `name` of `parent`, when known.
    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.children.get(&(parent, name.to_owned())).copied()
    }

    /// Records that `parent/name` is `ino` and counts one kernel lookup (`counted`), moving
    /// the inode if it was known under another name (renamed elsewhere).
    pub fn insert(&mut self, parent: u64, name: &str, ino: u64, kind: EntryKind, counted: bool) {
        if ino == ROOT_INO {
            return;
        }
        let key = (parent, name.to_owned());
        if let Some(old) = self.children.get(&key).copied() {
            if old != ino {
                // The name now means another file: the old inode keeps living for the kernel
                // but is detached from the name.
                self.children.remove(&key);
                if let Some(node) = self.nodes.get_mut(&old) {
                    node.parent = u64::MAX;
                }
            }
        }
        let add = u64::from(counted);
        self.aliases.remove(&ino);
        match self.nodes.get_mut(&ino) {
            Some(node) => {
                if node.parent != parent || node.name != name {
                    let old_key = (node.parent, std::mem::take(&mut node.name));
                    if self.children.get(&old_key) == Some(&ino) {
                        self.children.remove(&old_key);
                    }
                    node.parent = parent;
                    node.name = name.to_owned();
                }
                node.kind = kind;
                node.lookups += add;
            }
            None => {
                self.nodes.insert(
                    ino,
                    Node {
                        parent,
                        name: name.to_owned(),
                        kind,
                        lookups: add,
                    },
                );
            }
        }
        self.children.insert(key, ino);
    }

    /// Forgets the name `parent/name` (after unlink, rmdir, or when the server says it is
    /// gone); the inode itself stays until the kernel forgets it.
    pub fn remove_name(&mut self, parent: u64, name: &str) {
        if let Some(ino) = self.children.remove(&(parent, name.to_owned())) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.parent = u64::MAX;
            }
        }
    }

    /// Moves `parent/name` to `new_parent/new_name` (after a rename), replacing what was there.
    pub fn rename(&mut self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        let Some(ino) = self.children.get(&(parent, name.to_owned())).copied() else {
            self.remove_name(new_parent, new_name);
            return;
        };
        let kind = self.nodes.get(&ino).map_or(EntryKind::File, |n| n.kind);
        self.insert(new_parent, new_name, ino, kind, false);
    }

    /// Swaps the inodes of `parent/name` and `new_parent/new_name` (after RENAME_EXCHANGE);
    /// a name whose inode is unknown here just ends up unknown at the other place.
    pub fn exchange(&mut self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        let a_key = (parent, name.to_owned());
        let b_key = (new_parent, new_name.to_owned());
        let a = self.children.remove(&a_key);
        let b = self.children.remove(&b_key);
        for (ino, (p, n)) in [(a, &b_key), (b, &a_key)] {
            let Some(ino) = ino else { continue };
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.parent = *p;
                node.name = n.clone();
            }
            self.children.insert((*p, n.clone()), ino);
        }
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            let key = (node.parent, node.name.clone());
            self.nodes.remove(&ino);
            self.aliases.remove(&ino);
            if self.children.get(&key) == Some(&ino) {
                self.children.remove(&key);
            }
        }
    }

    /// Number of known inodes (root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only the root is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> DfsPath {
        DfsPath::parse(s).unwrap()
    }

    #[test]
    fn paths_are_rebuilt_from_parents() {
        let mut t = InodeTable::new();
        assert_eq!(t.path(ROOT_INO), Some(DfsPath::root()));
        t.insert(ROOT_INO, "a", 10, EntryKind::Dir, true);
        t.insert(10, "b.txt", 11, EntryKind::File, true);
        assert_eq!(t.path(11), Some(p("/a/b.txt")));
        assert_eq!(t.child(10, "b.txt"), Some(11));
        assert_eq!(t.path(99), None);
    }

    #[test]
    fn rename_keeps_the_inode_and_moves_the_subtree() {
        let mut t = InodeTable::new();
        t.insert(ROOT_INO, "a", 10, EntryKind::Dir, true);
        t.insert(10, "f", 11, EntryKind::File, true);
        t.insert(ROOT_INO, "z", 12, EntryKind::Dir, true);
        t.rename(ROOT_INO, "a", 12, "moved");
        assert_eq!(t.path(11), Some(p("/z/moved/f")));
        assert_eq!(t.child(ROOT_INO, "a"), None);
        // Renaming over an existing name detaches the old inode.
        t.insert(ROOT_INO, "x", 13, EntryKind::File, true);
        t.insert(ROOT_INO, "y", 14, EntryKind::File, true);
        t.rename(ROOT_INO, "x", ROOT_INO, "y");
        assert_eq!(t.child(ROOT_INO, "y"), Some(13));
        assert_eq!(t.path(14), None);
    }

    #[test]
    fn forget_drops_nodes_at_zero_and_unlink_detaches() {
        let mut t = InodeTable::new();
        t.insert(ROOT_INO, "f", 20, EntryKind::File, true);
        t.insert(ROOT_INO, "f", 20, EntryKind::File, true);
        t.forget(20, 1);
        assert_eq!(t.path(20), Some(p("/f")));
        t.forget(20, 1);
        assert_eq!(t.path(20), None);
        assert!(t.is_empty());
        t.insert(ROOT_INO, "g", 21, EntryKind::File, true);
        t.remove_name(ROOT_INO, "g");
        assert_eq!(t.child(ROOT_INO, "g"), None);
        assert_eq!(t.path(21), None);
        t.forget(ROOT_INO, 100);
        assert_eq!(t.path(ROOT_INO), Some(DfsPath::root()));
    }

    #[test]
    fn a_name_that_now_means_another_file_moves_over() {
        let mut t = InodeTable::new();
        t.insert(ROOT_INO, "f", 30, EntryKind::File, true);
        t.insert(ROOT_INO, "f", 31, EntryKind::File, true);
        assert_eq!(t.child(ROOT_INO, "f"), Some(31));
        assert_eq!(t.path(30), None);
        assert_eq!(t.path(31), Some(p("/f")));
    }

    #[test]
    fn exchange_swaps_two_names() {
        let mut t = InodeTable::new();
        t.insert(ROOT_INO, "d", 10, EntryKind::Dir, true);
        t.insert(ROOT_INO, "f", 11, EntryKind::File, true);
        t.insert(10, "x", 12, EntryKind::File, true);
        t.exchange(ROOT_INO, "f", 10, "x");
        assert_eq!(t.path(11), Some(p("/d/x")));
        assert_eq!(t.path(12), Some(p("/f")));
        assert_eq!(t.child(ROOT_INO, "f"), Some(12));
        assert_eq!(t.child(10, "x"), Some(11));
    }

    #[test]
    fn ids_never_collide_with_the_root() {
        assert_eq!(ino_of(0, &DfsPath::root()), ROOT_INO);
        assert_eq!(ino_of(7, &DfsPath::root()), ROOT_INO);
        assert_ne!(ino_of(1, &p("/a")), ROOT_INO);
        assert_ne!(ino_of(0, &p("/a")), ROOT_INO);
        assert_eq!(ino_of(42, &p("/a")), 42);
    }
}
