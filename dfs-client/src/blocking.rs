//! The blocking file-like API: [`Client`], [`OpenOptions`] and [`File`] with
//! `std::io::{Read, Write, Seek}`, for programs without async.
//!
//! A blocking client runs the async one on a small runtime of its own (one worker thread,
//! which also renews leases in the background). Like `reqwest::blocking`, it must not be
//! used from inside an async runtime: calls there panic.

use crate::client::{DirEntry, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A blocking client of one DFS cluster; see [`crate::Client`] for the contract.
///
/// ```no_run
/// use std::io::{Read, Write};
/// let client = dfs_client::blocking::Client::new("http://127.0.0.1:7000")?;
/// let mut file = client.create("/notes.txt")?;
/// file.write_all(b"hello")?;
/// file.close()?; // Ok only once the new version is durable and published
/// let mut text = String::new();
/// client.open("/notes.txt")?.read_to_string(&mut text)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// Settings of a blocking [`Client`]; see [`crate::ClientBuilder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

impl ClientBuilder {
    /// See [`crate::ClientBuilder::session`].
    pub fn session(self, name: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.session(name),
        }
    }

    /// See [`crate::ClientBuilder::lock_wait`].
    pub fn lock_wait(self, wait: Duration) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.lock_wait(wait),
        }
    }

    /// See [`crate::ClientBuilder::lockserver`].
    pub fn lockserver(self, url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.lockserver(url),
        }
    }

    /// See [`crate::ClientBuilder::spool_dir`].
    pub fn spool_dir(self, dir: impl Into<std::path::PathBuf>) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.spool_dir(dir),
        }
    }

    /// See [`crate::ClientBuilder::writeback`].
    pub fn writeback(self, dir: impl Into<std::path::PathBuf>) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.writeback(dir),
        }
    }

    /// See [`crate::ClientBuilder::ca`].
    pub fn ca(self, ca: impl AsRef<std::path::Path>) -> io::Result<ClientBuilder> {
        Ok(ClientBuilder {
            inner: self.inner.ca(ca)?,
        })
    }

    /// See [`crate::ClientBuilder::key`].
    pub fn key(self, key: dfs_proto::auth::ClientKey) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.key(key),
        }
    }

    /// The client, with its runtime (fails only when no thread can be started).
    pub fn build(self) -> io::Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dfs-client")
            .enable_all()
            .build()?;
        Ok(Client {
            inner: self.inner.build(),
            runtime: Arc::new(runtime),
        })
    }
}

impl Client {
    /// A client of the cluster whose nameserver is at `url`, with default settings and the
    /// key `DFS_KEY` names (see [`crate::Client::new`]).
    pub fn new(url: &str) -> io::Result<Client> {
        Client::builder(url).build()
    }

    /// A client that authenticates with `key` (see [`crate::Client::with_key`]).
    pub fn with_key(url: &str, key: dfs_proto::auth::ClientKey) -> io::Result<Client> {
        Client::builder(url).key(key).build()
    }

    /// A builder for a client with a session name, a lock wait, a spool directory or a key.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            inner: crate::Client::builder(url),
        }
    }

    /// The async client underneath.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// This client's session name at the lockserver.
    pub fn session(&self) -> &str {
        self.inner.session()
    }

    /// See [`crate::Client::publish_pending`].
    pub fn publish_pending(&self) -> io::Result<usize> {
        self.runtime.block_on(self.inner.publish_pending())
    }

    /// See [`crate::Client::wait_published`]. Dropping the last clone of a writeback client
    /// stops its publishing (the closed files stay for [`Client::publish_pending`] at the
    /// next start): call this before.
    pub fn wait_published(&self) -> io::Result<()> {
        self.runtime.block_on(self.inner.wait_published())
    }

    /// See [`crate::Client::wait_published_with_progress`].
    pub fn wait_published_with_progress(
        &self,
        progress: impl FnMut(usize, usize),
    ) -> io::Result<()> {
        self.runtime
            .block_on(self.inner.wait_published_with_progress(progress))
    }

    fn wrap(&self, file: crate::File) -> File {
        File {
            inner: file,
            runtime: self.runtime.clone(),
        }
    }

    /// See [`crate::Client::open`].
    pub fn open(&self, path: &str) -> io::Result<File> {
        let file = self.runtime.block_on(self.inner.open(path))?;
        Ok(self.wrap(file))
    }

    /// See [`crate::Client::create`].
    pub fn create(&self, path: &str) -> io::Result<File> {
        let file = self.runtime.block_on(self.inner.create(path))?;
        Ok(self.wrap(file))
    }

    /// See [`crate::Client::upload`].
    pub fn upload(&self, local: impl AsRef<Path>, path: &str) -> io::Result<Metadata> {
        self.runtime.block_on(self.inner.upload(local, path))
    }

    /// See [`crate::Client::upload_with_progress`].
    pub fn upload_with_progress(
        &self,
        local: impl AsRef<Path>,
        path: &str,
        progress: impl FnMut(u64) + Send,
    ) -> io::Result<Metadata> {
        self.runtime
            .block_on(self.inner.upload_with_progress(local, path, progress))
    }

    /// See [`crate::Client::options`].
    pub fn options(&self) -> OpenOptions {
        OpenOptions {
            client: self.clone(),
            inner: self.inner.options(),
        }
    }

    /// See [`crate::Client::metadata`].
    pub fn metadata(&self, path: &str) -> io::Result<Metadata> {
        self.runtime.block_on(self.inner.metadata(path))
    }

    /// See [`crate::Client::read_dir`].
    pub fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        self.runtime.block_on(self.inner.read_dir(path))
    }

    /// See [`crate::Client::create_dir`].
    pub fn create_dir(&self, path: &str) -> io::Result<()> {
        self.runtime.block_on(self.inner.create_dir(path))
    }

    /// See [`crate::Client::create_dir_all`].
    pub fn create_dir_all(&self, path: &str) -> io::Result<()> {
        self.runtime.block_on(self.inner.create_dir_all(path))
    }

    /// See [`crate::Client::remove_file`].
    pub fn remove_file(&self, path: &str) -> io::Result<()> {
        self.runtime.block_on(self.inner.remove_file(path))
    }

    /// See [`crate::Client::remove_dir`].
    pub fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.runtime.block_on(self.inner.remove_dir(path))
    }

    /// See [`crate::Client::rename`].
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.runtime.block_on(self.inner.rename(from, to))
    }

    /// See [`crate::Client::exchange`].
    pub fn exchange(&self, a: &str, b: &str) -> io::Result<()> {
        self.runtime.block_on(self.inner.exchange(a, b))
    }

    /// See [`crate::Client::list_xattr`].
    pub fn list_xattr(&self, path: &str) -> io::Result<Vec<String>> {
        self.runtime.block_on(self.inner.list_xattr(path))
    }

    /// See [`crate::Client::get_xattr`].
    pub fn get_xattr(&self, path: &str, name: &str) -> io::Result<Vec<u8>> {
        self.runtime.block_on(self.inner.get_xattr(path, name))
    }

    /// See [`crate::Client::set_xattr`].
    pub fn set_xattr(
        &self,
        path: &str,
        name: &str,
        value: &[u8],
        mode: dfs_proto::xattr::SetMode,
    ) -> io::Result<()> {
        self.runtime
            .block_on(self.inner.set_xattr(path, name, value, mode))
    }

    /// See [`crate::Client::remove_xattr`].
    pub fn remove_xattr(&self, path: &str, name: &str) -> io::Result<()> {
        self.runtime.block_on(self.inner.remove_xattr(path, name))
    }

    /// See [`crate::Client::symlink`].
    pub fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
        self.runtime.block_on(self.inner.symlink(target, link))
    }

    /// See [`crate::Client::hard_link`].
    pub fn hard_link(&self, original: &str, link: &str) -> io::Result<()> {
        self.runtime.block_on(self.inner.hard_link(original, link))
    }

    /// See [`crate::Client::read_link`].
    pub fn read_link(&self, path: &str) -> io::Result<String> {
        self.runtime.block_on(self.inner.read_link(path))
    }

    /// See [`crate::Client::set_mode`].
    pub fn set_mode(&self, path: &str, mode: u32) -> io::Result<Metadata> {
        self.runtime.block_on(self.inner.set_mode(path, mode))
    }

    /// See [`crate::Client::set_owner`].
    pub fn set_owner(
        &self,
        path: &str,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> io::Result<Metadata> {
        self.runtime.block_on(self.inner.set_owner(path, uid, gid))
    }

    /// See [`crate::Client::read`].
    pub fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.runtime.block_on(self.inner.read(path))
    }

    /// See [`crate::Client::write`].
    pub fn write(&self, path: &str, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.runtime.block_on(self.inner.write(path, bytes))
    }
}

/// How to open a file, like `std::fs::OpenOptions`; see [`crate::OpenOptions`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    client: Client,
    inner: crate::OpenOptions,
}

impl OpenOptions {
    /// Allows reading.
    pub fn read(&mut self, on: bool) -> &mut OpenOptions {
        self.inner.read(on);
        self
    }

    /// Allows writing (takes the write lease at open).
    pub fn write(&mut self, on: bool) -> &mut OpenOptions {
        self.inner.write(on);
        self
    }

    /// Every write goes to the end of the file (implies writing).
    pub fn append(&mut self, on: bool) -> &mut OpenOptions {
        self.inner.append(on);
        self
    }

    /// Starts from empty content.
    pub fn truncate(&mut self, on: bool) -> &mut OpenOptions {
        self.inner.truncate(on);
        self
    }

    /// Creates the file when it does not exist.
    pub fn create(&mut self, on: bool) -> &mut OpenOptions {
        self.inner.create(on);
        self
    }

    /// Creates the file, failing with `AlreadyExists` when it exists.
    pub fn create_new(&mut self, on: bool) -> &mut OpenOptions {
        self.inner.create_new(on);
        self
    }

    /// Permission bits of a file this open creates (default `0o644`).
    pub fn mode(&mut self, mode: u32) -> &mut OpenOptions {
        self.inner.mode(mode);
        self
    }

    /// Opens `path` with these modes.
    pub fn open(&self, path: &str) -> io::Result<File> {
        let file = self.client.runtime.block_on(self.inner.open(path))?;
        Ok(self.client.wrap(file))
    }
}

/// An open DFS file with `std::io::{Read, Write, Seek}`; see [`crate::File`] for the
/// contract.
///
/// Dropping a changed write-mode `File` without [`File::close`] publishes it in `Drop`
/// (blocking) and logs any error; call `close` to see the result.
#[derive(Debug)]
pub struct File {
    inner: crate::File,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl File {
    /// See [`crate::File::path`].
    pub fn path(&self) -> &dfs_proto::DfsPath {
        self.inner.path()
    }

    /// See [`crate::File::entry`].
    pub fn entry(&self) -> &dfs_proto::names::Entry {
        self.inner.entry()
    }

    /// See [`crate::File::published`].
    pub fn published(&self) -> Option<&dfs_proto::names::Entry> {
        self.inner.published()
    }

    /// See [`crate::File::len`].
    pub fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    /// See [`crate::File::is_empty`].
    pub fn is_empty(&self) -> io::Result<bool> {
        self.inner.is_empty()
    }

    /// See [`crate::File::set_len`].
    pub fn set_len(&mut self, size: u64) -> io::Result<()> {
        self.inner.set_len(size)
    }

    /// See [`crate::File::sync_all`]: publishes without closing.
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.runtime.block_on(self.inner.sync_all())
    }

    /// See [`crate::File::close`]: publishes, gives the lease back, reports the result.
    pub fn close(mut self) -> io::Result<()> {
        match self.inner.take_unfinished() {
            Some((writer, id, path)) => self.runtime.block_on(writer.finish(id, &path, true, true)),
            None => Ok(()),
        }
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let Some((writer, id, path)) = self.inner.take_unfinished() else {
            return;
        };
        let finish = crate::file::finish_dropped(writer, id, path);
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking inside a runtime would panic: publish in the background instead.
            self.runtime.spawn(finish);
        } else {
            self.runtime.block_on(finish);
        }
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_local(buf)
    }
}

impl Write for File {
    /// Writes to the local copy; fails once the lease is lost. Published by `close`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_local(buf)
    }

    /// Nothing to flush locally; publishing is [`File::close`] or [`File::sync_all`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek_local(pos)
    }
}
