//! The blob store: on-disk layout, the durable commit path, and the in-memory index.
//!
//! Layout under the data directory:
//! `blobs/<fan>/<file_id>-<version>-<size>-<crc>` (all lower-case hex, fixed width; `<fan>` is
//! two hex digits derived from the key), `tmp/` for uploads in progress, and `server-id`.
//! Names are built only from parsed integers. A blob becomes visible only by a rename after
//! its data was fsynced, and the rename is made durable by an fsync of its directory before
//! the upload is acknowledged. Size and checksum live in the name, so listing needs no sidecar
//! and a torn file (size differs from its name) is detected and dropped at start.

use super::storage::{DiskSpace, Storage, TempWriter};
use bytes::Bytes;
use dfs_proto::checksum::ChecksumWriter;
use dfs_proto::files::{BlobCheck, BlobInfo, BlobState};
use dfs_proto::{ApiError, Checksum, ErrorCode, FileId, Version};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Number of fan-out directories: keeps each directory small for any number of blobs.
const FAN_OUT: u32 = 256;

/// Name of the file holding the fileserver's stable id.
const SERVER_ID_FILE: &str = "server-id";
/// The identity secret next to the id: the nameserver binds the id to it (docs/security.md).
const SERVER_SECRET_FILE: &str = "server-secret";

type Key = (FileId, Version);

#[derive(Clone, Debug)]
enum Slot {
    /// Committed and durable.
    Ready(BlobInfo),
    /// Being committed or deleted; others wait.
    Busy,
}

/// Immutable blobs on one data directory, with every disk access going through [`Storage`].
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    storage: Arc<dyn Storage>,
    /// Ordered, so a listing page starts where the previous one ended.
    index: Mutex<BTreeMap<Key, Slot>>,
    tmp_seq: AtomicU64,
    /// Fan-out directories known to exist durably; created on first use.
    fans: Mutex<HashSet<String>>,
}

/// A message from the HTTP side to the thread writing an upload.
#[derive(Debug)]
pub enum Chunk {
    /// More body bytes.
    Data(Bytes),
    /// The body is complete: verify, fsync and commit.
    Finish,
}

pub(crate) fn fan(file_id: FileId, version: Version) -> String {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&file_id.to_le_bytes());
    key[8..].copy_from_slice(&version.to_le_bytes());
    format!("{:02x}", Checksum::of(&key).0 % FAN_OUT)
}

pub(crate) fn blob_name(info: &BlobInfo) -> String {
    format!(
        "{:016x}-{:016x}-{:016x}-{}",
        info.file_id, info.version, info.size, info.checksum
    )
}

/// Parses a blob file name back; `None` for anything the store did not write.
fn parse_name(name: &str) -> Option<BlobInfo> {
    let parts: Vec<&str> = name.split('-').collect();
    let [fid, ver, size, crc] = parts.as_slice() else {
        return None;
    };
    let hex64 = |s: &str| {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    Some(BlobInfo {
        file_id: hex64(fid)?,
        version: hex64(ver)?,
        size: hex64(size)?,
        checksum: Checksum::parse(crc)?,
    })
}

fn internal(context: &str, err: io::Error) -> ApiError {
    tracing::error!(%err, "{context}");
    let mut api = ApiError::from(err);
    api.message = format!("{context}: {}", api.message);
    api
}

impl BlobStore {
    /// Opens (creating if needed) the store under `root`: removes leftover temp files and
    /// indexes every committed blob. Blocking.
    pub fn open(root: &Path, storage: Arc<dyn Storage>) -> io::Result<BlobStore> {
        let store = BlobStore {
            root: root.to_path_buf(),
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
            storage,
            index: Mutex::default(),
            tmp_seq: AtomicU64::new(0),
            fans: Mutex::default(),
        };
        let s = &store.storage;
        s.create_dir_all(&store.tmp)?;
        s.create_dir_all(&store.blobs)?;
        s.sync_dir(&store.root)?;
        let leftovers = s.list(&store.tmp)?;
        for entry in &leftovers {
            tracing::info!(name = %entry.name, "removing leftover temp file");
            s.remove(&store.tmp.join(&entry.name))?;
        }
        if !leftovers.is_empty() {
            s.sync_dir(&store.tmp)?;
        }
        let mut index = BTreeMap::new();
        let mut fans = HashSet::new();
        for fan_dir in s.list(&store.blobs)? {
            let name = fan_dir.name;
            let is_fan = fan_dir.is_dir
                && name.len() == 2
                && u32::from_str_radix(&name, 16).is_ok_and(|n| n < FAN_OUT);
            if !is_fan {
                tracing::warn!(%name, "ignoring unknown entry in blob dir");
                continue;
            }
            let dir = store.blobs.join(&name);
            let mut dropped = false;
            for entry in s.list(&dir)? {
                let parsed = parse_name(&entry.name).filter(|i| fan(i.file_id, i.version) == name);
                match parsed {
                    Some(info) if info.size == entry.len && !entry.is_dir => {
                        index.insert((info.file_id, info.version), Slot::Ready(info));
                    }
                    Some(_) => {
                        tracing::warn!(name = %entry.name, len = entry.len, "dropping torn blob");
                        s.remove(&dir.join(&entry.name))?;
                        dropped = true;
                    }
                    None => tracing::warn!(name = %entry.name, "ignoring unknown file in blob dir"),
                }
            }
            if dropped {
                s.sync_dir(&dir)?;
            }
            fans.insert(name);
        }
        *store.lock() = index;
        *store.fans.lock().unwrap_or_else(|p| p.into_inner()) = fans;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, Slot>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blob_path(&self, info: &BlobInfo) -> PathBuf {
        self.blobs
            .join(fan(info.file_id, info.version))
            .join(blob_name(info))
    }

    /// The stable id of this fileserver: read from the data directory, or generated once and
    /// stored durably. Blocking.
    pub fn server_id(&self) -> io::Result<String> {
        self.small_file(SERVER_ID_FILE, 64, || {
            format!("fs-{:016x}", rand::random::<u64>())
        })
    }

    /// The secret that proves this data directory's id to the nameserver, made on first
    /// start. Losing it (a wiped data directory) means a new id, as losing the blobs would.
    pub fn server_secret(&self) -> io::Result<String> {
        self.small_file(SERVER_SECRET_FILE, 128, dfs_proto::auth::new_secret)
    }

    /// Reads a one-line file of `[A-Za-z0-9-]` in the data directory, or writes `make()`
    /// durably when it is missing or invalid.
    fn small_file(
        &self,
        name: &str,
        max_len: usize,
        make: impl FnOnce() -> String,
    ) -> io::Result<String> {
        let path = self.root.join(name);
        match self.storage.open_read(&path) {
            Ok(mut file) => {
                let mut text = String::new();
                io::Read::read_to_string(&mut file, &mut text)?;
                let value = text.trim().to_owned();
                if !value.is_empty()
                    && value.len() <= max_len
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Ok(value);
                }
                tracing::warn!("{name} file is invalid; generating a new one");
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let value = make();
        let tmp = self.tmp.join(format!("{name}.tmp"));
        let mut writer = self.storage.create(&tmp)?;
        writer.write_all(format!("{value}\n").as_bytes())?;
        writer.sync()?;
        self.storage.rename(&tmp, &path)?;
        self.storage.sync_dir(&self.root)?;
        Ok(value)
    }

    /// Disk capacity and free bytes of the data directory.
    pub fn space(&self) -> io::Result<DiskSpace> {
        self.storage.space(&self.root)
    }

    /// The committed blob (file_id, version), if any.
    pub fn get(&self, file_id: FileId, version: Version) -> Option<BlobInfo> {
        match self.lock().get(&(file_id, version)) {
            Some(Slot::Ready(info)) => Some(info.clone()),
            _ => None,
        }
    }

    /// Every committed blob, ordered by (file_id, version).
    pub fn list(&self) -> Vec<BlobInfo> {
        let mut all: Vec<BlobInfo> = self
            .lock()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(info) => Some(info.clone()),
                Slot::Busy => None,
            })
            .collect();
        all.sort_by_key(|i| (i.file_id, i.version));
        all
    }

    /// Up to `limit` committed blobs after `after` in (file_id, version) order, and whether
    /// more follow: one page of `GET /v1/blobs`, taken without copying the whole index.
    pub fn list_page(&self, after: Option<Key>, limit: usize) -> (Vec<BlobInfo>, bool) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let index = self.lock();
        let mut ready = index
            .range((start, Bound::Unbounded))
            .filter_map(|(_, slot)| match slot {
                Slot::Ready(info) => Some(info),
                Slot::Busy => None,
            });
        let page: Vec<BlobInfo> = ready.by_ref().take(limit).cloned().collect();
        let more = ready.next().is_some();
        (page, more)
    }

    /// Opens a committed blob for reading. Blocking (one `open`).
    pub fn open_blob(
        &self,
        file_id: FileId,
        version: Version,
    ) -> Result<(BlobInfo, File), ApiError> {
        let info = self
            .get(file_id, version)
            .ok_or_else(|| not_found(file_id, version))?;
        match self.storage.open_read(&self.blob_path(&info)) {
            Ok(file) => Ok((info, file)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.forget_vanished(&info);
                Err(not_found(file_id, version))
            }
            Err(err) => Err(internal("cannot open blob", err)),
        }
    }

    /// Drops a committed blob whose file vanished from disk from the index, so it is no longer
    /// listed (the nameserver then stops counting this server as its holder).
    fn forget_vanished(&self, info: &BlobInfo) {
        let key = (info.file_id, info.version);
        let mut index = self.lock();
        if matches!(index.get(&key), Some(Slot::Ready(i)) if i == info) {
            tracing::error!(
                file_id = info.file_id,
                version = info.version,
                "blob file is gone; forgetting it"
            );
            index.remove(&key);
        }
    }

    /// Re-reads blob (file_id, version) from disk and checks its length and CRC-32C against
    /// the ones it was stored with. A blob whose file is gone is forgotten (`missing`); one
    /// whose content differs is removed (`corrupt`), so that it is neither served nor listed
    /// again and can be replaced by a good copy. Waits while the blob is being committed or
    /// deleted, so a commit in progress never looks missing. Blocking; reads the whole blob
    /// once. An error means the check itself failed (I/O), not that the blob is bad.
    pub fn verify(&self, file_id: FileId, version: Version) -> Result<BlobCheck, ApiError> {
        let key = (file_id, version);
        let missing = BlobCheck {
            state: BlobState::Missing,
            recorded: None,
            computed: None,
        };
        let info = loop {
            match self.lock().get(&key) {
                Some(Slot::Ready(info)) => break info.clone(),
                Some(Slot::Busy) => {}
                None => return Ok(missing),
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let mut file = match self.storage.open_read(&self.blob_path(&info)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.forget_vanished(&info);
                return Ok(missing);
            }
            Err(err) => return Err(internal("cannot open blob", err)),
        };
        let mut sum = ChecksumWriter::default();
        let mut len = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match io::Read::read(&mut file, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(internal("cannot read blob", err)),
            };
            sum.update(&buf[..n]);
            len += n as u64;
        }
        let found = sum.finish();
        let computed = Some(BlobInfo {
            size: len,
            checksum: found,
            ..info.clone()
        });
        if len == info.size && found == info.checksum {
            return Ok(BlobCheck {
                state: BlobState::Good,
                recorded: Some(info),
                computed,
            });
        }
        tracing::error!(
            file_id,
            version,
            len,
            %found,
            size = info.size,
            checksum = %info.checksum,
            "blob is corrupt; removing it"
        );
        match self.delete(file_id, version) {
            Ok(_) => {}
            Err(err) if err.code == ErrorCode::NotFound => {}
            Err(err) => return Err(err),
        }
        Ok(BlobCheck {
            state: BlobState::Corrupt,
            recorded: Some(info),
            computed,
        })
    }

    /// Takes the slot of `key` for a commit or delete, waiting while another one holds it.
    fn claim(&self, key: Key) -> Option<BlobInfo> {
        loop {
            {
                let mut index = self.lock();
                match index.get(&key) {
                    Some(Slot::Busy) => {}
                    Some(Slot::Ready(info)) => {
                        let info = info.clone();
                        index.insert(key, Slot::Busy);
                        return Some(info);
                    }
                    None => {
                        index.insert(key, Slot::Busy);
                        return None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn release(&self, key: Key, slot: Option<Slot>) {
        let mut index = self.lock();
        match slot {
            Some(slot) => index.insert(key, slot),
            None => index.remove(&key),
        };
    }

    /// Writes an upload: receives chunks until [`Chunk::Finish`], checks length and checksum,
    /// fsyncs, renames into place, fsyncs the directory, and only then returns the blob.
    /// Blocking; run it on a blocking thread fed by the HTTP side. If the channel closes
    /// without `Finish` the upload is abandoned and nothing is stored.
    pub fn write_upload(
        &self,
        file_id: FileId,
        version: Version,
        checksum: Option<Checksum>,
        expected_len: Option<u64>,
        chunks: tokio::sync::mpsc::Receiver<Chunk>,
    ) -> Result<BlobInfo, ApiError> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .tmp
            .join(format!("{file_id:016x}-{version:016x}-{seq:x}.tmp"));
        let result = self.write_and_commit(&tmp, file_id, version, checksum, expected_len, chunks);
        if result.is_err() {
            // Best effort: a leftover is also removed at the next start.
            let _ = self.storage.remove(&tmp);
        }
        result
    }

    fn write_and_commit(
        &self,
        tmp: &Path,
        file_id: FileId,
        version: Version,
        checksum: Option<Checksum>,
        expected_len: Option<u64>,
        mut chunks: tokio::sync::mpsc::Receiver<Chunk>,
    ) -> Result<BlobInfo, ApiError> {
        let mut writer: Box<dyn TempWriter> = self
            .storage
            .create(tmp)
            .map_err(|e| internal("cannot create temp file", e))?;
        let mut sum = ChecksumWriter::default();
        let mut len = 0u64;
        loop {
            match chunks.blocking_recv() {
                Some(Chunk::Data(bytes)) => {
                    sum.update(&bytes);
                    len += bytes.len() as u64;
                    writer
                        .write_all(&bytes)
                        .map_err(|e| internal("cannot write temp file", e))?;
                }
                Some(Chunk::Finish) => break,
                None => {
                    return Err(ApiError::bad_request("upload aborted before its end"));
                }
            }
        }
        let received = sum.finish();
        if expected_len.is_some_and(|want| want != len) || checksum.is_some_and(|c| c != received) {
            return Err(ApiError::new(
                ErrorCode::ChecksumMismatch,
                format!(
                    "received {len} bytes with checksum {received}, announced {} bytes with {}",
                    expected_len.map_or("?".to_owned(), |l| l.to_string()),
                    checksum.map_or("none".to_owned(), |c| c.to_string()),
                ),
            ));
        }
        writer
            .sync()
            .map_err(|e| internal("cannot fsync temp file", e))?;
        drop(writer);
        let info = BlobInfo {
            file_id,
            version,
            size: len,
            checksum: received,
        };
        self.commit(tmp, info)
    }

    fn commit(&self, tmp: &Path, info: BlobInfo) -> Result<BlobInfo, ApiError> {
        let key = (info.file_id, info.version);
        if let Some(existing) = self.claim(key) {
            self.release(key, Some(Slot::Ready(existing.clone())));
            let _ = self.storage.remove(tmp);
            if existing.checksum == info.checksum && existing.size == info.size {
                return Ok(existing);
            }
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "blob {}/{} already stored with checksum {} and {} bytes",
                    info.file_id, info.version, existing.checksum, existing.size
                ),
            ));
        }
        let dest = self.blob_path(&info);
        let Some(dir) = dest.parent().map(Path::to_path_buf) else {
            self.release(key, None);
            return Err(ApiError::internal("blob path has no directory"));
        };
        if let Err(err) = self.ensure_fan_dir(&dir) {
            self.release(key, None);
            return Err(internal("cannot create blob directory", err));
        }
        if let Err(err) = self.storage.rename(tmp, &dest) {
            self.release(key, None);
            return Err(internal("cannot rename blob into place", err));
        }
        if let Err(err) = self.storage.sync_dir(&dir) {
            // Not durable, so not acknowledged: take it back out of sight.
            let _ = self.storage.remove(&dest);
            self.release(key, None);
            return Err(internal("cannot fsync blob directory", err));
        }
        self.release(key, Some(Slot::Ready(info.clone())));
        Ok(info)
    }

    /// Creates a fan-out directory on first use, durably (its entry in `blobs/` is fsynced)
    /// before anything is renamed into it.
    fn ensure_fan_dir(&self, dir: &Path) -> io::Result<()> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if self
            .fans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&name)
        {
            return Ok(());
        }
        self.storage.create_dir_all(dir)?;
        self.storage.sync_dir(&self.blobs)?;
        self.fans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
        Ok(())
    }

    /// Removes a blob durably (the directory is fsynced before this returns). Blocking.
    pub fn delete(&self, file_id: FileId, version: Version) -> Result<BlobInfo, ApiError> {
        let key = (file_id, version);
        let Some(info) = self.claim(key) else {
            self.release(key, None);
            return Err(not_found(file_id, version));
        };
        let path = self.blob_path(&info);
        if let Err(err) = self.storage.remove(&path) {
            if err.kind() != io::ErrorKind::NotFound {
                self.release(key, Some(Slot::Ready(info)));
                return Err(internal("cannot remove blob", err));
            }
        }
        self.release(key, None);
        let dir = path.parent().unwrap_or(&self.blobs);
        self.storage
            .sync_dir(dir)
            .map_err(|e| internal("cannot fsync blob directory", e))?;
        Ok(info)
    }
}

fn not_found(file_id: FileId, version: Version) -> ApiError {
    ApiError::not_found(format!("no blob {file_id}/{version} here"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let info = BlobInfo {
            file_id: 7,
            version: u64::MAX,
            size: 12345,
            checksum: Checksum(0xdeadbeef),
        };
        assert_eq!(parse_name(&blob_name(&info)), Some(info));
        assert_eq!(parse_name(".."), None);
        assert_eq!(parse_name("0-0-0-0"), None);
        assert_eq!(parse_name("x.tmp"), None);
    }
}
