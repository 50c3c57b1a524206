//! The one door through which the fileserver touches its disk, so a test can cut the power.
//!
//! Every durable step of the commit path (create a temp file, write, fsync, rename into place,
//! fsync the directory) is a separate call here. [`RealStorage`] does them on the real file
//! system; [`super::powerloss::PowerLossStorage`] records what was made durable and can roll the
//! disk back to exactly that, which is what a power cut does.

use crate::common::fsyncs::Counter;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// File name (never a path).
    pub name: String,
    /// Length in bytes (0 for directories).
    pub len: u64,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// Capacity and free space of the data disk, reported to the nameserver for placement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskSpace {
    /// Total bytes.
    pub capacity: u64,
    /// Bytes available to this (unprivileged) process.
    pub free: u64,
}

/// A file being written; nothing in it counts until [`TempWriter::sync`] returns.
pub trait TempWriter: Send {
    /// Appends `buf`; may sit in the page cache until `sync`.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// fsync of the data: after this the bytes survive a power cut (the name may not).
    fn sync(&mut self) -> io::Result<()>;
}

/// Disk operations of the fileserver; blocking, call them from `spawn_blocking`.
///
/// Paths are absolute and always built by the fileserver itself from parsed integers, never
/// from user input.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates a directory (and missing parents); its entry is durable only after
    /// [`Storage::sync_dir`] of its parent.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates (truncating) a file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn TempWriter>>;
    /// Atomically renames `from` to `to`, replacing `to`; durable after `sync_dir` of `to`'s dir.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync of a directory: makes creations, renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Opens a file for reading.
    fn open_read(&self, path: &Path) -> io::Result<File>;
    /// Lists a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Removes a file; durable after `sync_dir` of its directory.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Capacity and free bytes of the file system holding `dir`.
    fn space(&self, dir: &Path) -> io::Result<DiskSpace>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealStorage;

struct RealWriter {
    file: File,
}

impl TempWriter for RealWriter {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl Storage for RealStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn TempWriter>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(RealWriter { file }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let meta = entry.metadata()?;
            out.push(DirEntry {
                name,
                len: if meta.is_dir() { 0 } else { meta.len() },
                is_dir: meta.is_dir(),
            });
        }
        Ok(out)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn space(&self, dir: &Path) -> io::Result<DiskSpace> {
        statvfs(dir)
    }
}

/// statvfs(3) of the file system holding `dir`.
pub fn statvfs(dir: &Path) -> io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and st a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(DiskSpace {
        capacity: (st.f_blocks as u64).saturating_mul(frsize),
        free: (st.f_bavail as u64).saturating_mul(frsize),
    })
}

/// Any [`Storage`] with its fsyncs counted (file data and directories), for `GET /v1/stats`.
#[derive(Debug)]
pub struct CountingStorage {
    inner: Arc<dyn Storage>,
    fsyncs: Counter,
}

impl CountingStorage {
    /// Wraps `inner`; every [`TempWriter::sync`] and [`Storage::sync_dir`] bumps `fsyncs`.
    pub fn new(inner: Arc<dyn Storage>, fsyncs: Counter) -> CountingStorage {
        CountingStorage { inner, fsyncs }
    }
}

struct CountingWriter {
    inner: Box<dyn TempWriter>,
    fsyncs: Counter,
}

impl TempWriter for CountingWriter {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.fsyncs.bump();
        self.inner.sync()
    }
}

impl Storage for CountingStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn TempWriter>> {
        Ok(Box::new(CountingWriter {
            inner: self.inner.create(path)?,
            fsyncs: self.fsyncs.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.fsyncs.bump();
        self.inner.sync_dir(dir)
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        self.inner.open_read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.list(dir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }

    fn space(&self, dir: &Path) -> io::Result<DiskSpace> {
        self.inner.space(dir)
    }
}
