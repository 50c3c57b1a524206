//! A [`Storage`] that can simulate a power cut: only what was fsynced survives.
//!
//! It applies every operation to a real directory (so reads work as usual) and keeps a model of
//! what is durable, pessimistic as POSIX allows: file data counts only after the file's fsync,
//! and a name (created, renamed or removed) only after an fsync of its directory. [`crash`]
//! rewrites the directory to that durable state; data written but never fsynced comes back
//! torn (its first half), which is the nastiest thing a disk may legally do. A budget of
//! operations lets a test cut the power at every single step of a commit path.
//!
//! [`crash`]: PowerLossStorage::crash

use super::storage::{DirEntry, DiskSpace, RealStorage, Storage, TempWriter};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Sim {
    volatile: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Mutating operations left before the power goes out; `None` = unlimited.
    budget: Option<u64>,
    dead: bool,
    ops: u64,
}

impl Sim {
    /// Counts one mutating operation, failing once the power is out.
    fn step(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(power_cut());
        }
        if let Some(left) = self.budget.as_mut() {
            if *left == 0 {
                self.dead = true;
                return Err(power_cut());
            }
            *left -= 1;
        }
        self.ops += 1;
        Ok(())
    }
}

fn power_cut() -> io::Error {
    io::Error::other("simulated power cut")
}

/// Storage over a real directory that remembers what is durable and can lose the rest.
#[derive(Debug, Clone)]
pub struct PowerLossStorage {
    root: PathBuf,
    sim: Arc<Mutex<Sim>>,
}

impl PowerLossStorage {
    /// Simulates the disk under `root`, which must be empty or missing (it is created, durably).
    pub fn new(root: &Path) -> io::Result<PowerLossStorage> {
        std::fs::create_dir_all(root)?;
        Ok(PowerLossStorage {
            root: root.to_path_buf(),
            sim: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        self.sim
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cuts the power after `ops` more mutating operations (every later one fails).
    pub fn set_budget(&self, ops: Option<u64>) {
        self.lock().budget = ops;
    }

    /// Mutating operations performed so far; a test uses it to size its loop over cut points.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Cuts the power now: the directory is rewritten to its durable state and the storage
    /// works again, as after a reboot.
    pub fn crash(&self) -> io::Result<()> {
        let mut sim = self.lock();
        let mut kept: BTreeMap<PathBuf, Node> = BTreeMap::new();
        // BTreeMap order visits a parent before its children.
        for (path, node) in &sim.durable {
            let parent_ok = match path.parent() {
                Some(parent) if parent == self.root => true,
                Some(parent) => kept.get(parent) == Some(&Node::Dir),
                None => false,
            };
            if parent_ok {
                kept.insert(path.clone(), *node);
            }
        }
        for entry in std::fs::read_dir(&self.root)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        let mut inodes = HashMap::new();
        for (path, node) in &kept {
            match node {
                Node::Dir => std::fs::create_dir_all(path)?,
                Node::File(id) => {
                    let content = match sim.inodes.get(id) {
                        Some(Inode {
                            synced: Some(bytes),
                            ..
                        }) => bytes.clone(),
                        Some(inode) => inode.data[..inode.data.len() / 2].to_vec(),
                        None => Vec::new(),
                    };
                    std::fs::write(path, &content)?;
                    inodes.insert(
                        *id,
                        Inode {
                            data: content.clone(),
                            synced: Some(content),
                        },
                    );
                }
            }
        }
        sim.volatile = kept.clone();
        sim.durable = kept;
        sim.inodes = inodes;
        sim.budget = None;
        sim.dead = false;
        Ok(())
    }
}

struct SimWriter {
    file: File,
    inode: u64,
    sim: Arc<Mutex<Sim>>,
}

impl TempWriter for SimWriter {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut sim = self.sim.lock().unwrap_or_else(|p| p.into_inner());
        sim.step()?;
        io::Write::write_all(&mut self.file, buf)?;
        if let Some(inode) = sim.inodes.get_mut(&self.inode) {
            inode.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut sim = self.sim.lock().unwrap_or_else(|p| p.into_inner());
        sim.step()?;
        if let Some(inode) = sim.inodes.get_mut(&self.inode) {
            inode.synced = Some(inode.data.clone());
        }
        Ok(())
    }
}

impl Storage for PowerLossStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut sim = self.lock();
        sim.step()?;
        RealStorage.create_dir_all(dir)?;
        let mut at = dir;
        while at != self.root && at.starts_with(&self.root) {
            sim.volatile.entry(at.to_path_buf()).or_insert(Node::Dir);
            match at.parent() {
                Some(parent) => at = parent,
                None => break,
            }
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn TempWriter>> {
        let mut sim = self.lock();
        sim.step()?;
        let file = File::create(path)?;
        sim.next_inode += 1;
        let inode = sim.next_inode;
        sim.inodes.insert(inode, Inode::default());
        sim.volatile.insert(path.to_path_buf(), Node::File(inode));
        Ok(Box::new(SimWriter {
            file,
            inode,
            sim: self.sim.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut sim = self.lock();
        sim.step()?;
        std::fs::rename(from, to)?;
        if let Some(node) = sim.volatile.remove(from) {
            sim.volatile.insert(to.to_path_buf(), node);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut sim = self.lock();
        sim.step()?;
        let in_dir = |p: &Path| p.parent() == Some(dir);
        let now: Vec<(PathBuf, Node)> = sim
            .volatile
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        sim.durable.retain(|p, _| !in_dir(p));
        sim.durable.extend(now);
        Ok(())
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        if self.lock().dead {
            return Err(power_cut());
        }
        File::open(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        if self.lock().dead {
            return Err(power_cut());
        }
        RealStorage.list(dir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.lock();
        sim.step()?;
        std::fs::remove_file(path)?;
        sim.volatile.remove(path);
        Ok(())
    }

    fn space(&self, dir: &Path) -> io::Result<DiskSpace> {
        RealStorage.space(dir)
    }
}
