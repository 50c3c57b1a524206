//! Extended attributes on the mount: `getxattr`, `listxattr`, `setxattr`, `removexattr`
//! against the nameserver, where they are stored (so every mount sees them).
//!
//! `trusted.*` is root's only, as on Linux: another caller gets EPERM when writing, ENODATA
//! when reading, and does not see those names listed. `system.*` (POSIX ACLs) is answered
//! with EOPNOTSUPP (docs/SEMANTICS.md says why). The kernel asks for `security.capability`
//! before every write to a file; a mount that found no `security.*` attribute on an inode
//! remembers that for the attribute timeout (at least a second), so writes do not each cost
//! a round trip; a directory listing says which entries have attributes, so `ls -l` (which
//! asks for `security.selinux` of each file) costs none either.

use crate::fs::{DfsFs, DirItem};
use dashmap::DashMap;
use dfs_proto::names::SetXattrRequest;
use dfs_proto::xattr::{is_trusted, validate_name, SetMode, XattrValue};
use dfs_proto::ApiError;
use fuser::Errno;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shortest time names are remembered: with `attr_timeout=0` every `write(2)` would otherwise
/// cost a round trip to the nameserver for the kernel's `security.capability` check.
const MIN_TTL: Duration = Duration::from_secs(1);

/// Inodes whose names are remembered before the expired ones are dropped.
const MAX_REMEMBERED: usize = 10_000;

fn errno(err: &ApiError) -> Errno {
    Errno::from_i32(err.errno())
}

/// A name the kernel passed, checked as the nameserver would check it.
fn checked(name: &OsStr) -> Result<&str, Errno> {
    // Names are stored as UTF-8 (they travel in JSON); Linux allows any bytes but NUL.
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    validate_name(name).map_err(|e| errno(&e))?;
    Ok(name)
}

/// The mount's extended-attribute operations and its short memory of attribute names.
#[derive(Debug)]
pub struct Xattrs {
    /// Names of an inode's attributes as last fetched, for answering a `security.*` lookup
    /// of an absent name without asking (the kernel's per-write `security.capability`).
    names: DashMap<u64, (Instant, Arc<Vec<String>>)>,
    /// How long those names are trusted: the attribute timeout (at least [`MIN_TTL`]), the
    /// same staleness the kernel already allows for every other attribute.
    ttl: Duration,
}

impl Xattrs {
    /// Remembers names for `ttl` (the mount's attribute timeout), at least [`MIN_TTL`].
    pub fn new(ttl: Duration) -> Xattrs {
        Xattrs {
            names: DashMap::new(),
            ttl: ttl.max(MIN_TTL),
        }
    }

    async fn fetch_names(&self, fs: &DfsFs, ino: u64) -> Result<Arc<Vec<String>>, Errno> {
        let path = fs.locate(ino).await?;
        let names = Arc::new(
            fs.remote()
                .names
                .list_xattr(&path)
                .await
                .map_err(|e| errno(&e))?,
        );
        self.make_room(1);
        self.names.insert(ino, (Instant::now(), names.clone()));
        Ok(names)
    }

    /// Keeps the memory bounded: drops expired entries, and everything when that is not
    /// enough (it is only a memory; a lookup then asks the nameserver).
    fn make_room(&self, extra: usize) {
        if self.names.len() + extra > MAX_REMEMBERED {
            self.names.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if self.names.len() + extra > MAX_REMEMBERED {
                self.names.clear();
            }
        }
    }

    fn fresh_names(&self, ino: u64) -> Option<Arc<Vec<String>>> {
        let entry = self.names.get(&ino)?;
        (entry.0.elapsed() < self.ttl).then(|| entry.1.clone())
    }

    /// Notes that `ino` was just created here and so has no attributes: the writes that
    /// follow (`tar`, `cp` of many small files) need no round trip for the kernel's
    /// `security.capability` check. (A create without O_EXCL may open a file another mount
    /// made, with attributes: then its `security.*` names show up here within the same
    /// timeout as any change made elsewhere.)
    pub fn note_created(&self, ino: u64) {
        self.make_room(1);
        self.names
            .insert(ino, (Instant::now(), Arc::new(Vec::new())));
    }

    /// Notes what a directory listing said of its entries' attributes, so that `ls -l`
    /// (which asks for `security.selinux` of every file) costs no request per file.
    pub fn note_listing(&self, items: &[DirItem]) {
        let now = Instant::now();
        let none = Arc::new(Vec::new());
        self.make_room(items.len().min(MAX_REMEMBERED));
        let mut room = MAX_REMEMBERED;
        for item in items {
            if item.has_xattrs {
                self.names.remove(&item.ino);
            } else if room > 0 {
                room -= 1;
                self.names.insert(item.ino, (now, none.clone()));
            }
        }
    }

    /// `getxattr`: the value of `name` (the adapter answers size queries and ERANGE).
    pub async fn get(
        &self,
        fs: &DfsFs,
        ino: u64,
        name: &OsStr,
        uid: u32,
    ) -> Result<Vec<u8>, Errno> {
        let name = checked(name)?;
        tracing::debug!(ino, name, "getxattr");
        if is_trusted(name) && uid != 0 {
            return Err(Errno::ENODATA);
        }
        if name.starts_with("security.") {
            let names = match self.fresh_names(ino) {
                Some(names) => names,
                None => self.fetch_names(fs, ino).await?,
            };
            if !names.iter().any(|n| n == name) {
                return Err(Errno::ENODATA);
            }
        }
        let path = fs.locate(ino).await?;
        fs.remote()
            .names
            .get_xattr(&path, name)
            .await
            .map_err(|e| errno(&e))
    }

    /// `listxattr`: the names, each followed by a NUL, as the kernel wants them; `trusted.*`
    /// only for root.
    pub async fn list(&self, fs: &DfsFs, ino: u64, uid: u32) -> Result<Vec<u8>, Errno> {
        let names = self.fetch_names(fs, ino).await?;
        let mut out = Vec::new();
        for name in names.iter().filter(|n| uid == 0 || !is_trusted(n)) {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    /// `setxattr` with `XATTR_CREATE` / `XATTR_REPLACE` in `flags`.
    pub async fn set(
        &self,
        fs: &DfsFs,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        uid: u32,
    ) -> Result<(), Errno> {
        fs.check_writable()?;
        let name = checked(name)?;
        let mode = SetMode::from_flags(flags).ok_or(Errno::EINVAL)?;
        if is_trusted(name) && uid != 0 {
            return Err(Errno::EPERM);
        }
        let req = SetXattrRequest {
            path: fs.locate(ino).await?,
            name: name.to_owned(),
            value: XattrValue(value.to_vec()),
            mode,
        };
        self.names.remove(&ino);
        fs.remote()
            .names
            .set_xattr(&req)
            .await
            .map_err(|e| errno(&e))
    }

    /// `removexattr`.
    pub async fn remove(&self, fs: &DfsFs, ino: u64, name: &OsStr, uid: u32) -> Result<(), Errno> {
        fs.check_writable()?;
        let name = checked(name)?;
        if is_trusted(name) && uid != 0 {
            return Err(Errno::EPERM);
        }
        let path = fs.locate(ino).await?;
        self.names.remove(&ino);
        fs.remote()
            .names
            .remove_xattr(&path, name)
            .await
            .map_err(|e| errno(&e))
    }
}

/// What a `getxattr`/`listxattr` reply is for a caller's buffer of `size` bytes: the length
/// when `size` is 0, ERANGE when the data does not fit.
pub enum Fitted<'a> {
    /// Tell the length only.
    Len(u32),
    /// Send the bytes.
    Data(&'a [u8]),
}

/// Decides the reply for `data` and a caller's buffer `size`.
pub fn fit(data: &[u8], size: u32) -> Result<Fitted<'_>, Errno> {
    let len = u32::try_from(data.len()).map_err(|_| Errno::E2BIG)?;
    if size == 0 {
        Ok(Fitted::Len(len))
    } else if len > size {
        Err(Errno::ERANGE)
    } else {
        Ok(Fitted::Data(data))
    }
}
