//! The async file-like API: [`Client`] (namespace calls, opening files) and [`OpenOptions`].
//!
//! Every call is one or a few requests to the cluster; files are whole-file copies in a
//! local spool file (see [`crate::File`]). Errors are [`std::io::Error`]s whose kind follows
//! [`dfs_proto::ErrorCode::io_kind`], with the [`dfs_proto::ApiError`] kept inside.

use crate::file::{File, Writer};
use crate::leases::{HeldLease, Leases};
use crate::remote::Remote;
use crate::write::{publish_io_error, LocalCopy, WriteSession};
use crate::writeback::Writeback;
use dfs_proto::auth::{ClientKey, KEY_ENV};
use dfs_proto::client::http_client;
use dfs_proto::names::{
    Entry, EntryKind, LinkRequest, OpenWriteRequest, OpenWriteResponse, RenameRequest,
    SetAttrRequest, SymlinkRequest,
};
use dfs_proto::tls::TlsConfig;
use dfs_proto::{ApiError, DfsPath, ErrorCode, FileId, Version};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often [`Client::upload_with_progress`] reports.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Permission bits of files created without [`OpenOptions::mode`].
const DEFAULT_MODE: u32 = 0o644;

/// What every handle of one client shares: the cluster clients and the lease manager.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The cluster.
    pub(crate) remote: Arc<Remote>,
    /// Leases under this client's session name.
    pub(crate) leases: Arc<Leases>,
    /// Where spool files go (`None`: the system temp directory).
    pub(crate) spool_dir: Option<PathBuf>,
    /// The writeback directory, when [`ClientBuilder::writeback`] asked for one.
    pub(crate) writeback_dir: Option<PathBuf>,
    /// The writeback directory opened and its publishing task, from the first call needing it.
    pub(crate) writeback: tokio::sync::OnceCell<Writeback>,
}

impl Shared {
    /// A fresh spool file name (the file exists, empty; removed when the path is dropped).
    pub(crate) fn spool(&self) -> io::Result<tempfile::TempPath> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(".dfs-spool-");
        let file = match (&self.writeback_dir, &self.spool_dir) {
            // Created when the writeback directory is opened, which every caller (a download,
            // a write-open) does first, to wait for this client's pending publish of the path.
            (Some(root), _) => builder.tempfile_in(crate::writeback::spool_dir(root))?,
            (None, Some(dir)) => builder.tempfile_in(dir)?,
            (None, None) => builder.tempfile()?,
        };
        Ok(file.into_temp_path())
    }

    /// The writeback directory and its publishing task (opened at the first call), or `None`
    /// without writeback.
    pub(crate) async fn writeback(&self) -> io::Result<Option<&Writeback>> {
        let Some(dir) = &self.writeback_dir else {
            return Ok(None);
        };
        let open = || Writeback::open(dir.clone(), self.leases.clone(), self.remote.clone());
        Ok(Some(self.writeback.get_or_try_init(open).await?))
    }

    /// Waits until no file closed under `path` here still waits for its publish (writeback),
    /// so that what follows sees the closed content.
    pub(crate) async fn settle(&self, path: &DfsPath) -> io::Result<()> {
        if let Some(wb) = self.writeback().await? {
            wb.settle(path).await;
        }
        Ok(())
    }
}

/// A caller's own file as the content [`Client::upload`] publishes: nothing to keep when
/// the publish fails, the caller still has it.
struct Source<'a>(&'a Path);

impl LocalCopy for Source<'_> {
    fn path(&self) -> &Path {
        self.0
    }

    /// The error is the upload's result; the copy is the caller's own file, so there is
    /// nothing kept to point at.
    fn publish_failed(&self, path: &DfsPath, err: &ApiError) {
        tracing::debug!(%path, %err, "upload failed");
    }
}

/// Parses a DFS path given by a program (absolute, `/`-separated, validated once).
pub(crate) fn parse(path: &str) -> io::Result<DfsPath> {
    DfsPath::parse(path).map_err(io::Error::from)
}

/// A client of one DFS cluster, for programs: open, create and manage files like `std::fs`.
///
/// Cheap to clone (clones share connections and the lease session). All methods need a
/// tokio runtime; see [`crate::blocking::Client`] for a version without async.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let client = dfs_client::Client::new("http://127.0.0.1:7000");
/// let mut file = client.create("/notes.txt").await?;
/// file.write_all(b"hello").await?;
/// file.close().await?; // Ok only once the new version is durable and published
/// let mut text = String::new();
/// client.open("/notes.txt").await?.read_to_string(&mut text).await?;
/// assert_eq!(text, "hello");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// Settings of a [`Client`] beyond the nameserver URL; from [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    nameserver: String,
    lockserver: Option<String>,
    session: Option<String>,
    lock_wait: Duration,
    spool_dir: Option<PathBuf>,
    writeback: Option<PathBuf>,
    http: Option<reqwest::Client>,
    key: Option<ClientKey>,
}

impl ClientBuilder {
    /// Trusts only the CA certificate(s) in the PEM file `ca` for `https://` servers: a
    /// cluster whose certificates a private CA signed (`--ca`, `DFS_CA`). Reads the file now,
    /// so a wrong path fails here rather than at the first request.
    pub fn ca(mut self, ca: impl AsRef<Path>) -> io::Result<ClientBuilder> {
        self.http = Some(TlsConfig::with_ca(ca.as_ref()).http_client()?);
        Ok(self)
    }

    /// Names this client at the lockserver (default: `dfs-client@host:pid:random`), so
    /// `dfs locks` shows who holds a lease. Two clients with one session name share leases:
    /// give each writer its own.
    pub fn session(mut self, name: impl Into<String>) -> ClientBuilder {
        self.session = Some(name.into());
        self
    }

    /// How long a write-mode open waits for another writer's lease before failing with
    /// `ResourceBusy` (default: zero, fail at once; the mount's `-o lock_wait`).
    pub fn lock_wait(mut self, wait: Duration) -> ClientBuilder {
        self.lock_wait = wait;
        self
    }

    /// Uses this lockserver instead of asking the nameserver for it (fixed setups, tests).
    pub fn lockserver(mut self, url: impl Into<String>) -> ClientBuilder {
        self.lockserver = Some(url.into());
        self
    }

    /// Where open files are spooled (default: the system temp directory). A file must fit
    /// there while open.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> ClientBuilder {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Turns on writeback with `dir` as its local directory: [`File::close`] returns once the
    /// content and a record of it are durable in `dir`, and a background task publishes the
    /// closed files in close order, each under its lease (docs/client.md, "Writeback").
    /// [`Client::wait_published`] waits for them and reports failed publishes;
    /// [`Client::publish_pending`] publishes what an earlier process left in `dir`. One client
    /// at a time uses a directory (the second gets `ResourceBusy`); spool files go there too.
    pub fn writeback(mut self, dir: impl Into<PathBuf>) -> ClientBuilder {
        self.writeback = Some(dir.into());
        self
    }

    /// Authenticates every request with `key` (made by `dfs keygen client`) instead of the
    /// key named by `DFS_KEY`.
    pub fn key(mut self, key: ClientKey) -> ClientBuilder {
        self.key = Some(key);
        self
    }

    /// The client. Connects lazily: nothing is sent before the first call.
    pub fn build(self) -> Client {
        let http = self.http.unwrap_or_else(http_client);
        let remote = Remote::with_http(&self.nameserver, http);
        let remote = match &self.lockserver {
            Some(lock) => remote.fixed_lockserver(lock),
            None => remote,
        };
        let remote = Arc::new(match self.key {
            Some(key) => remote.with_credential(key.credential()),
            None => remote,
        });
        let session = self.session.unwrap_or_else(Leases::session_name);
        Client {
            shared: Arc::new(Shared {
                leases: Arc::new(Leases::new(remote.clone(), session, self.lock_wait)),
                remote,
                spool_dir: self.spool_dir,
                writeback_dir: self.writeback,
                writeback: tokio::sync::OnceCell::new(),
            }),
        }
    }
}

/// The client key in the file `DFS_KEY` names, or `None` when it is unset. A key file that
/// cannot be read is logged and ignored: the servers then answer `401`, which names the cure.
pub fn key_from_env() -> Option<ClientKey> {
    let path = std::env::var_os(KEY_ENV)?;
    match ClientKey::load(std::path::Path::new(&path)) {
        Ok(key) => Some(key),
        Err(err) => {
            tracing::warn!(%err, "{KEY_ENV} names no usable key; sending requests without one");
            None
        }
    }
}

impl Client {
    /// A client of the cluster whose nameserver is at `url` (e.g. `http://ns:7000`), with
    /// default settings and the key in the file named by `DFS_KEY`, when set (see
    /// [`key_from_env`]).
    pub fn new(url: &str) -> Client {
        Client::builder(url).build()
    }

    /// A client that authenticates with `key` (ignoring `DFS_KEY`).
    pub fn with_key(url: &str, key: ClientKey) -> Client {
        Client::builder(url).key(key).build()
    }

    /// A builder for a client with a session name, a lock wait, a spool directory or a key.
    /// It starts with the key named by `DFS_KEY`, when set.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            nameserver: url.to_owned(),
            lockserver: None,
            session: None,
            lock_wait: Duration::ZERO,
            spool_dir: None,
            writeback: None,
            http: None,
            key: key_from_env(),
        }
    }

    /// A client of the `https://` cluster at `url` whose certificates the CA in the PEM file
    /// `ca` signed (as `Client::builder(url).ca(ca)?.build()`).
    pub fn with_ca(url: &str, ca: impl AsRef<Path>) -> io::Result<Client> {
        Ok(Client::builder(url).ca(ca)?.build())
    }

    /// The cluster clients underneath (the protocol layer), for what this API does not cover.
    pub fn remote(&self) -> &Remote {
        &self.shared.remote
    }

    /// This client's session name at the lockserver.
    pub fn session(&self) -> &str {
        self.shared.leases.session()
    }

    /// With writeback: opens the writeback directory and starts publishing, first, the files
    /// an earlier process closed there and did not get to publish (each on top of the version
    /// it was written on; one changed by someone else since is a conflict, kept). Returns how
    /// many there were; call it at start. Without writeback: `Ok(0)`.
    pub async fn publish_pending(&self) -> io::Result<usize> {
        Ok(self
            .shared
            .writeback()
            .await?
            .map_or(0, Writeback::recovered))
    }

    /// With writeback: waits until every file closed so far is published. `Err` names the
    /// files whose publish failed since the last call (a conflict; their content is kept in
    /// the writeback directory). Without writeback: `Ok(())` at once. Transient failures (a
    /// server down) are retried for as long as it takes: bound the wait with
    /// `tokio::time::timeout` where that matters; what is not published stays in the
    /// directory for [`Client::publish_pending`].
    pub async fn wait_published(&self) -> io::Result<()> {
        self.wait_published_with_progress(|_, _| {}).await
    }

    /// [`Client::wait_published`], calling `progress(published, closed)` at the start and
    /// then every 200 ms or so while files are still waiting.
    pub async fn wait_published_with_progress(
        &self,
        progress: impl FnMut(usize, usize),
    ) -> io::Result<()> {
        match self.shared.writeback().await? {
            Some(wb) => wb.wait(progress).await,
            None => Ok(()),
        }
    }

    /// Opens `path` for reading: downloads its current version whole into a spool file.
    pub async fn open(&self, path: &str) -> io::Result<File> {
        self.options().read(true).open(path).await
    }

    /// Opens `path` for writing, creating it or truncating it (`std::fs::File::create`):
    /// takes the write lease (`ResourceBusy` if another client holds it).
    pub async fn create(&self, path: &str) -> io::Result<File> {
        self.options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
    }

    /// Options for an open with other modes (append, create_new, read-write, ...).
    pub fn options(&self) -> OpenOptions {
        OpenOptions {
            client: self.clone(),
            flags: Flags::default(),
        }
    }

    /// Metadata of `path` as the nameserver has it now.
    pub async fn metadata(&self, path: &str) -> io::Result<Metadata> {
        let path = parse(path)?;
        self.shared.settle(&path).await?;
        Ok(Metadata::from(self.shared.remote.names.stat(&path).await?))
    }

    /// The entries of directory `path`, in name order.
    pub async fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let path = parse(path)?;
        let entries = self.shared.remote.names.list(&path).await?;
        Ok(entries
            .into_iter()
            .map(|entry| DirEntry {
                meta: Metadata::from(entry),
            })
            .collect())
    }

    /// Creates directory `path`; its parent must exist (`AlreadyExists` if it exists).
    pub async fn create_dir(&self, path: &str) -> io::Result<()> {
        let path = parse(path)?;
        self.shared.remote.names.mkdir(&path, None).await?;
        Ok(())
    }

    /// Creates directory `path` and every missing parent; an existing directory is fine.
    pub async fn create_dir_all(&self, path: &str) -> io::Result<()> {
        let path = parse(path)?;
        let mut at = DfsPath::root();
        for name in path.components() {
            at = at.join(name)?;
            match self.shared.remote.names.mkdir(&at, None).await {
                Ok(_) => {}
                Err(err) if err.code == ErrorCode::AlreadyExists => {
                    let entry = self.shared.remote.names.stat(&at).await?;
                    if entry.kind != EntryKind::Dir {
                        return Err(ApiError::new(
                            ErrorCode::NotDirectory,
                            format!("{at} exists and is not a directory"),
                        )
                        .into());
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Removes file `path`. A client writing it elsewhere then fails its close with
    /// `StaleNetworkFileHandle`.
    pub async fn remove_file(&self, path: &str) -> io::Result<()> {
        let path = parse(path)?;
        self.shared.settle(&path).await?;
        self.shared.remote.names.unlink(&path).await?;
        Ok(())
    }

    /// Removes the empty directory `path` (`DirectoryNotEmpty` otherwise).
    pub async fn remove_dir(&self, path: &str) -> io::Result<()> {
        let path = parse(path)?;
        self.shared.remote.names.rmdir(&path).await?;
        Ok(())
    }

    /// Renames `from` to `to` atomically, replacing a file at `to` (like `std::fs::rename`).
    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let req = RenameRequest {
            from: parse(from)?,
            to: parse(to)?,
            no_replace: false,
            exchange: false,
        };
        self.shared.settle(&req.from).await?;
        self.shared.settle(&req.to).await?;
        self.shared.remote.names.rename(&req).await?;
        Ok(())
    }

    /// Swaps `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`); both must exist.
    pub async fn exchange(&self, a: &str, b: &str) -> io::Result<()> {
        let req = RenameRequest {
            from: parse(a)?,
            to: parse(b)?,
            no_replace: false,
            exchange: true,
        };
        self.shared.settle(&req.from).await?;
        self.shared.settle(&req.to).await?;
        self.shared.remote.names.rename(&req).await?;
        Ok(())
    }

    /// The names of `path`'s extended attributes, sorted (`user.*`, `trusted.*`,
    /// `security.*`; this API does not hide `trusted.*` as the mount does for non-root).
    pub async fn list_xattr(&self, path: &str) -> io::Result<Vec<String>> {
        let path = parse(path)?;
        Ok(self.shared.remote.names.list_xattr(&path).await?)
    }

    /// One extended attribute's value; an error of kind `NotFound` whose code is `no_data`
    /// when `path` has no such attribute.
    pub async fn get_xattr(&self, path: &str, name: &str) -> io::Result<Vec<u8>> {
        let path = parse(path)?;
        Ok(self.shared.remote.names.get_xattr(&path, name).await?)
    }

    /// Sets an extended attribute; `mode` says whether it must not exist yet
    /// (`XATTR_CREATE`) or must exist (`XATTR_REPLACE`).
    pub async fn set_xattr(
        &self,
        path: &str,
        name: &str,
        value: &[u8],
        mode: dfs_proto::xattr::SetMode,
    ) -> io::Result<()> {
        let req = dfs_proto::names::SetXattrRequest {
            path: parse(path)?,
            name: name.to_owned(),
            value: dfs_proto::xattr::XattrValue(value.to_vec()),
            mode,
        };
        Ok(self.shared.remote.names.set_xattr(&req).await?)
    }

    /// Removes an extended attribute.
    pub async fn remove_xattr(&self, path: &str, name: &str) -> io::Result<()> {
        let path = parse(path)?;
        Ok(self.shared.remote.names.remove_xattr(&path, name).await?)
    }

    /// Makes `link` a symbolic link to `target` (stored as given, like `std::os::unix::fs::symlink`).
    pub async fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
        let req = SymlinkRequest {
            path: parse(link)?,
            target: target.to_owned(),
            owner: None,
        };
        self.shared.remote.names.symlink(&req).await?;
        Ok(())
    }

    /// Makes `link` another name of the existing file `original` (a hard link, like
    /// `std::fs::hard_link`): one file, one content, one write lease whatever name it is
    /// opened by; its content goes when its last name does.
    pub async fn hard_link(&self, original: &str, link: &str) -> io::Result<()> {
        let req = LinkRequest {
            path: parse(original)?,
            new_path: parse(link)?,
        };
        self.shared.remote.names.link(&req).await?;
        Ok(())
    }

    /// The target of symbolic link `path`; `InvalidInput` when it is not a link.
    pub async fn read_link(&self, path: &str) -> io::Result<String> {
        let meta = self.metadata(path).await?;
        meta.symlink_target().map(str::to_owned).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is not a symbolic link"),
            )
        })
    }

    /// Sets the permission bits of `path` (chmod; setuid, setgid and sticky included).
    pub async fn set_mode(&self, path: &str, mode: u32) -> io::Result<Metadata> {
        self.setattr(path, Some(mode), None, None).await
    }

    /// Changes the owner and/or group of `path` (chown). The nameserver stores what it is
    /// sent: who may do this is decided by the key (read-write) and, on a mount, the kernel.
    pub async fn set_owner(
        &self,
        path: &str,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> io::Result<Metadata> {
        self.setattr(path, None, uid, gid).await
    }

    async fn setattr(
        &self,
        path: &str,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> io::Result<Metadata> {
        let req = SetAttrRequest {
            path: parse(path)?,
            mode,
            mtime_ns: None,
            atime_ns: None,
            uid,
            gid,
            kill_suid: false,
            access: false,
        };
        Ok(Metadata::from(
            self.shared.remote.names.setattr(&req).await?,
        ))
    }

    /// The whole content of `path` in memory (for small files; [`Client::open`] streams).
    pub async fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        let mut file = self.open(path).await?;
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes).await?;
        Ok(bytes)
    }

    /// Replaces (or creates) `path` with `bytes`; returns once they are published (with
    /// writeback: once they are durable in the writeback directory, as [`File::close`]). On
    /// failure nothing is kept locally (the caller still has the bytes).
    pub async fn write(&self, path: &str, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        let mut file = self.create(path).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, bytes.as_ref()).await?;
        file.close_keeping(false).await
    }

    /// Downloads the current version of `path` into a fresh spool file, asking again when a
    /// version vanished everywhere between the stat and the download (a newer publish).
    /// Publishes the local file `local` as the whole new content of `path`, created when
    /// missing and replaced when present, streamed from `local` to the fileservers with no
    /// local copy in between: a large file goes out at the network's and the disk's rate
    /// instead of being written once more into a spool first. Lease, durability and errors
    /// are those of [`Client::create`], a write of every byte and [`File::close`]; a `local`
    /// that changes during the upload is refused (its replicas would differ) rather than
    /// published torn.
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// let client = dfs_client::Client::new("http://127.0.0.1:7000");
    /// let meta = client.upload("photos.tar", "/backup/photos.tar").await?;
    /// assert!(meta.is_file());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload(&self, local: impl AsRef<Path>, path: &str) -> io::Result<Metadata> {
        self.upload_with_progress(local, path, |_| {}).await
    }

    /// [`Client::upload`], calling `progress` about five times a second with how many
    /// bytes of `local` have been sent (to every replica; an average over them, and
    /// approximate while other uploads of this client run at the same time): a long
    /// upload can show how far it is.
    pub async fn upload_with_progress(
        &self,
        local: impl AsRef<Path>,
        path: &str,
        mut progress: impl FnMut(u64) + Send,
    ) -> io::Result<Metadata> {
        let local = local.as_ref();
        if !std::fs::metadata(local)?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", local.display()),
            ));
        }
        let path = parse(path)?;
        let shared = &self.shared;
        let (lease, opened) = self
            .lease_and_open_write(&path, Some(DEFAULT_MODE), false)
            .await?;
        let file_id = opened.entry.id;
        let mut session = WriteSession::new(lease, opened, true);
        let copies = session.targets.len().max(1) as u64;
        let files = &shared.remote.files;
        let start = files.uploaded_bytes();
        let source = Source(local);
        let published = {
            let publish = session.publish(file_id, &path, &source, &shared.leases, &shared.remote);
            tokio::pin!(publish);
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            loop {
                tokio::select! {
                    result = &mut publish => break result.map_err(publish_io_error),
                    _ = tick.tick() => progress((files.uploaded_bytes() - start) / copies),
                }
            }
        };
        if let Some(lease) = session.lease.take() {
            lease.release(&shared.leases).await;
        }
        published?;
        match session.last_entry {
            Some(entry) => Ok(Metadata::from(entry)),
            None => self.metadata(path.as_str()).await,
        }
    }

    async fn download(&self, path: &DfsPath) -> io::Result<(Entry, tempfile::TempPath)> {
        self.shared.settle(path).await?;
        let spool = self.shared.spool()?;
        let entry = self.shared.remote.download_current(path, &spool).await?;
        Ok((entry, spool))
    }

    /// A read-only open: the current version in a spool file whose name is gone already
    /// (the open descriptor keeps it), so nothing is left behind however the file ends.
    async fn open_read(&self, path: DfsPath) -> io::Result<File> {
        let (entry, spool) = self.download(&path).await?;
        let file = std::fs::OpenOptions::new().read(true).open(&spool)?;
        // The open descriptor keeps the bytes; the name is not needed any more.
        drop(spool);
        Ok(File::new(file, path, entry, None, false))
    }

    /// The first steps of every write: the lease on `path`, then open-write under it
    /// (creating with mode `create`, failing if it exists when `exclusive`); a directory is
    /// refused, and the lease is given back when anything fails.
    async fn lease_and_open_write(
        &self,
        path: &DfsPath,
        create: Option<u32>,
        exclusive: bool,
    ) -> io::Result<(Arc<HeldLease>, OpenWriteResponse)> {
        self.shared.settle(path).await?;
        let shared = &self.shared;
        let lease = Arc::new(shared.leases.acquire(path).await?);
        let req = OpenWriteRequest {
            path: path.clone(),
            token: lease.token,
            lease: Some(lease.signed()),
            create,
            exclusive,
            exclude: Vec::new(),
            owner: None,
        };
        let opened = match shared.remote.names.open_write(&req).await {
            Ok(opened) if opened.entry.kind == EntryKind::Dir => Err(ApiError::new(
                ErrorCode::IsDirectory,
                format!("{path} is a directory"),
            )),
            other => other,
        };
        match opened {
            Ok(opened) => Ok((lease, opened)),
            Err(err) => {
                lease.release(&shared.leases).await;
                Err(err.into())
            }
        }
    }

    /// A write-mode open: the lease, open-write (creating as `flags` say), the base version
    /// downloaded into a spool file unless truncating; the lease is given back on failure.
    async fn open_write(&self, path: DfsPath, flags: Flags) -> io::Result<File> {
        let shared = &self.shared;
        let create = (flags.create || flags.create_new).then_some(flags.mode);
        let (lease, opened) = self
            .lease_and_open_write(&path, create, flags.create_new)
            .await?;
        let prepared = async {
            let spool = shared.spool()?;
            if !flags.truncate && opened.entry.size > 0 {
                shared.remote.download(&opened.entry, &spool).await?;
            }
            let file = std::fs::OpenOptions::new()
                .read(flags.read)
                .write(true)
                .append(flags.append)
                .open(&spool)?;
            Ok::<_, io::Error>((spool, file))
        }
        .await;
        let (spool, file) = match prepared {
            Ok(p) => p,
            Err(err) => {
                lease.release(&shared.leases).await;
                return Err(err);
            }
        };
        let truncated = flags.truncate && opened.entry.size > 0;
        let entry = opened.entry.clone();
        let session = WriteSession::new(lease, opened, truncated);
        let writer = Writer::new(shared.clone(), session, spool);
        tracing::debug!(%path, base = entry.version, "opened for writing");
        Ok(File::new(file, path, entry, Some(writer), flags.append))
    }
}

/// The modes of an open, as `std::fs::OpenOptions` has them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flags {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
}

impl Default for Flags {
    fn default() -> Flags {
        Flags {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: DEFAULT_MODE,
        }
    }
}

impl Flags {
    /// The combinations `std::fs::OpenOptions` refuses are refused here too.
    fn check(&self) -> io::Result<()> {
        let invalid = |why: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, why.to_owned()));
        let writing = self.write || self.append;
        if !self.read && !writing {
            return invalid("open needs read, write or append");
        }
        if (self.truncate || self.create || self.create_new) && !writing {
            return invalid("truncate, create and create_new need write or append");
        }
        if self.truncate && self.append {
            return invalid("truncate and append exclude each other");
        }
        Ok(())
    }
}

/// How to open a file: the modes of `std::fs::OpenOptions`, from [`Client::options`].
///
/// A write-mode open (`write` or `append`) takes the file's write lease for as long as the
/// [`File`] is open; a read-only open takes nothing and never waits for a writer.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    client: Client,
    flags: Flags,
}

impl OpenOptions {
    /// Allows reading.
    pub fn read(&mut self, on: bool) -> &mut OpenOptions {
        self.flags.read = on;
        self
    }

    /// Allows writing (takes the write lease at open).
    pub fn write(&mut self, on: bool) -> &mut OpenOptions {
        self.flags.write = on;
        self
    }

    /// Every write goes to the end of the file (implies writing).
    pub fn append(&mut self, on: bool) -> &mut OpenOptions {
        self.flags.append = on;
        self
    }

    /// Starts from empty content (nothing is downloaded).
    pub fn truncate(&mut self, on: bool) -> &mut OpenOptions {
        self.flags.truncate = on;
        self
    }

    /// Creates the file when it does not exist.
    pub fn create(&mut self, on: bool) -> &mut OpenOptions {
        self.flags.create = on;
        self
    }

    /// Creates the file, failing with `AlreadyExists` when it exists.
    pub fn create_new(&mut self, on: bool) -> &mut OpenOptions {
        self.flags.create_new = on;
        self
    }

    /// Permission bits of a file this open creates (default `0o644`).
    pub fn mode(&mut self, mode: u32) -> &mut OpenOptions {
        self.flags.mode = mode & 0o7777;
        self
    }

    /// Opens `path` with these modes.
    pub async fn open(&self, path: &str) -> io::Result<File> {
        self.flags.check()?;
        let path = parse(path)?;
        if self.flags.write || self.flags.append {
            self.client.open_write(path, self.flags).await
        } else {
            self.client.open_read(path).await
        }
    }
}

/// What the nameserver knows of a file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    entry: Entry,
}

impl From<Entry> for Metadata {
    fn from(entry: Entry) -> Metadata {
        Metadata { entry }
    }
}

impl Metadata {
    /// Size in bytes of the current version (0 for directories).
    pub fn len(&self) -> u64 {
        self.entry.size
    }

    /// Whether the current version is empty.
    pub fn is_empty(&self) -> bool {
        self.entry.size == 0
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.entry.kind == EntryKind::Dir
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.entry.kind == EntryKind::File
    }

    /// Whether this is a symbolic link (metadata never follows links).
    pub fn is_symlink(&self) -> bool {
        self.entry.kind == EntryKind::Symlink
    }

    /// File, directory, symlink, FIFO, socket or device node.
    pub fn kind(&self) -> EntryKind {
        self.entry.kind
    }

    /// A symbolic link's target, as stored.
    pub fn symlink_target(&self) -> Option<&str> {
        self.entry.target.as_deref()
    }

    /// Owner's user id.
    pub fn uid(&self) -> u32 {
        self.entry.uid
    }

    /// Owner's group id.
    pub fn gid(&self) -> u32 {
        self.entry.gid
    }

    /// Link count (2 + subdirectories for a directory).
    pub fn nlink(&self) -> u64 {
        self.entry.nlink
    }

    /// Permission bits (`0o644`).
    pub fn mode(&self) -> u32 {
        self.entry.mode
    }

    /// Last modification time.
    pub fn modified(&self) -> SystemTime {
        let ns = self.entry.mtime_ns;
        if ns >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
        }
    }

    /// The current content version (changes with every publish; 0 is empty, never written).
    pub fn version(&self) -> Version {
        self.entry.version
    }

    /// The file's id, stable across renames.
    pub fn id(&self) -> FileId {
        self.entry.id
    }

    /// The path it had when this was fetched.
    pub fn path(&self) -> &DfsPath {
        &self.entry.path
    }

    /// The nameserver's whole record (checksum, holders, ...).
    pub fn entry(&self) -> &Entry {
        &self.entry
    }
}

/// One entry of [`Client::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    meta: Metadata,
}

impl DirEntry {
    /// Its full path.
    pub fn path(&self) -> &DfsPath {
        self.meta.path()
    }

    /// Its name within the directory.
    pub fn file_name(&self) -> &str {
        self.meta.path().name()
    }

    /// Its metadata at listing time.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }
}
