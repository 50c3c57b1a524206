//! Writeback ([`crate::ClientBuilder::writeback`]): [`crate::File::close`] returns once the
//! content and a record of it are durable in a local directory; one background task publishes
//! the closed files in the order they were closed, each under its lease, and a client started
//! later on the same directory publishes what an earlier one did not get to
//! ([`crate::Client::publish_pending`]).
//!
//! Layout of the directory: `lock` (held with `flock` by the one client using it), `spool/`
//! (files open for writing), `pending/<seq>.data` and `pending/<seq>.json` (a closed file and
//! its record, `seq` in close order). A record is written only after its data is fsynced and
//! named, and the directory is fsynced before close returns, so a record always has its data.
//! A record with an `error` is a publish that met a conflict: kept for the user, not retried.

use crate::leases::Leases;
use crate::remote::Remote;
use crate::write::{LocalCopy, WriteSession};
use dfs_proto::{ApiError, Checksum, DfsPath, ErrorCode, FileId, Version};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Version of the record format, so a later release can read what this one left.
const SCHEMA: u32 = 1;

/// Longest pause between two tries of a writeback publish.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Whether a writeback publish that failed with `err` is tried again: anything but a conflict
/// or a refusal that waiting cannot change, since the close already returned `Ok`. Shared
/// with the mount's `-o writeback`.
pub fn retries(err: &ApiError) -> bool {
    err.code.is_retryable()
        || matches!(
            err.code,
            ErrorCode::LeaseExpired | ErrorCode::Busy | ErrorCode::NoSpace
        )
}

/// The pause before try `n + 1` (200 ms doubling, at most ten seconds).
pub fn pause(n: u32) -> Duration {
    (Duration::from_millis(200) * 2u32.saturating_pow(n.min(6))).min(MAX_PAUSE)
}

/// Publishes `local` through `session` until it succeeds or fails with what waiting cannot
/// change (see [`retries`]), pausing between tries. A lease lost or refused on the way is
/// given back and taken again at the next try, which checks that nobody published meanwhile.
/// The writeback publish of both the library and the mount's `-o writeback` after a restart.
pub async fn publish_retrying(
    session: &mut WriteSession,
    file_id: FileId,
    path: &DfsPath,
    local: &dyn LocalCopy,
    leases: &Leases,
    remote: &Remote,
) -> Result<(), ApiError> {
    let mut tries = 0;
    loop {
        match session.publish(file_id, path, local, leases, remote).await {
            Err(err) if retries(&err) => {
                tracing::warn!(%path, %err, "writeback: publish failed; retrying");
                if let Some(lease) = session.lease.take() {
                    lease.release(leases).await;
                }
                tokio::time::sleep(pause(tries)).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// What `pending/<seq>.json` holds: enough to publish the data on top of the version it was
/// written on, in a later process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    schema: u32,
    path: String,
    file_id: FileId,
    base_version: Version,
    /// Set when the publish met a conflict: the data is kept, no longer published.
    #[serde(default)]
    error: Option<String>,
}

/// One closed file waiting for its publish.
struct Job {
    seq: u64,
    path: DfsPath,
    file_id: FileId,
    session: WriteSession,
    /// Closed by an earlier process: a conflict may be its own publish that landed just
    /// before that process died.
    recovered: bool,
}

/// The data of a job as the content its write session publishes.
struct PendingCopy(PathBuf);

impl LocalCopy for PendingCopy {
    fn path(&self) -> &Path {
        &self.0
    }
}

/// Counters and outcomes the waiting side reads.
#[derive(Debug, Default)]
struct Progress {
    next_seq: u64,
    queued: usize,
    done: usize,
    /// Files not yet published, by path, so a later open of one waits for its publish.
    paths: HashMap<DfsPath, usize>,
    /// Publishes that failed since the last [`Writeback::wait`], as messages.
    failures: Vec<String>,
}

/// State shared by the client and its publishing task.
#[derive(Debug)]
struct Shared {
    pending: PathBuf,
    progress: Mutex<Progress>,
    changed: Notify,
}

impl Shared {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn data(&self, seq: u64) -> PathBuf {
        data_path(&self.pending, seq)
    }

    fn record(&self, seq: u64) -> PathBuf {
        record_path(&self.pending, seq)
    }
}

/// `pending/<seq>.data`: the content of closed file `seq`.
fn data_path(pending: &Path, seq: u64) -> PathBuf {
    pending.join(format!("{seq:016x}.data"))
}

/// `pending/<seq>.json`: the record of closed file `seq`.
fn record_path(pending: &Path, seq: u64) -> PathBuf {
    pending.join(format!("{seq:016x}.json"))
}

/// A close that could not be staged: the error, and the session and spool file (gone if the
/// staging task died) to publish the usual way.
pub(crate) type Unstaged = (io::Error, WriteSession, Option<tempfile::TempPath>);

/// An open writeback directory and the task publishing from it.
#[derive(Debug)]
pub(crate) struct Writeback {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Job>,
    /// Files an earlier process left, queued at open.
    recovered: usize,
    /// Holds the directory's `flock` for as long as this client lives.
    _lock: fs::File,
}

/// Where a client spools files open for writing when writeback is on: beside `pending/`, on
/// the same file system, so a close links the spool file there instead of copying it.
pub(crate) fn spool_dir(root: &Path) -> PathBuf {
    root.join("spool")
}

impl Writeback {
    /// Opens `root` (creating it), takes its lock, clears what an earlier process left
    /// unfinished, and starts the publishing task with that process's closed files first.
    /// Must run inside a tokio runtime.
    pub(crate) async fn open(
        root: PathBuf,
        leases: Arc<Leases>,
        remote: Arc<Remote>,
    ) -> io::Result<Writeback> {
        let (lock, records, pending) = tokio::task::spawn_blocking(move || scan(&root))
            .await
            .map_err(io::Error::other)??;
        let next_seq = records.last().map_or(1, |(seq, _)| seq + 1);
        let shared = Arc::new(Shared {
            pending,
            progress: Mutex::new(Progress {
                next_seq,
                ..Progress::default()
            }),
            changed: Notify::new(),
        });
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(publish_all(shared.clone(), jobs, leases, remote));
        let wb = Writeback {
            shared,
            queue,
            recovered: 0,
            _lock: lock,
        };
        let mut recovered = 0;
        for (seq, record) in records {
            if let Some(error) = &record.error {
                tracing::warn!(path = %record.path, %error, data = %wb.shared.data(seq).display(), "writeback: a file kept after a conflict");
                continue;
            }
            let Ok(path) = DfsPath::parse(&record.path) else {
                tracing::error!(path = %record.path, "writeback: a record names no valid path; skipped");
                continue;
            };
            let session = WriteSession::unleased(record.base_version);
            wb.enqueue(Job {
                seq,
                path,
                file_id: record.file_id,
                session,
                recovered: true,
            });
            recovered += 1;
        }
        Ok(Writeback { recovered, ..wb })
    }

    /// How many files an earlier process closed and this one is publishing.
    pub(crate) fn recovered(&self) -> usize {
        self.recovered
    }

    fn enqueue(&self, job: Job) {
        {
            let mut progress = self.shared.progress();
            progress.queued += 1;
            *progress.paths.entry(job.path.clone()).or_default() += 1;
        }
        if let Err(mpsc::error::SendError(job)) = self.queue.send(job) {
            // The task only ends when the runtime does; the files stay for the next start.
            tracing::error!(path = %job.path, "writeback: the publishing task is gone; the file is published at the next start");
        }
    }

    /// Makes the closed file `spool` durable here with its record, then queues its publish
    /// (which takes over the session and its lease). On error nothing was queued and the
    /// session is handed back with the spool file (when it still exists), to publish the
    /// usual way.
    pub(crate) async fn stage(
        &self,
        spool: tempfile::TempPath,
        session: WriteSession,
        file_id: FileId,
        path: &DfsPath,
    ) -> Result<(), Unstaged> {
        let seq = {
            let mut progress = self.shared.progress();
            progress.next_seq += 1;
            progress.next_seq - 1
        };
        let record = Record {
            schema: SCHEMA,
            path: path.to_string(),
            file_id,
            base_version: session.base_version,
            error: None,
        };
        let shared = self.shared.clone();
        let staged =
            tokio::task::spawn_blocking(move || stage_blocking(&shared, seq, spool, &record)).await;
        match staged {
            Ok(Ok(())) => {
                self.enqueue(Job {
                    seq,
                    path: path.clone(),
                    file_id,
                    session,
                    recovered: false,
                });
                Ok(())
            }
            Ok(Err((err, spool))) => Err((err, session, Some(spool))),
            // The spool went down with the task: nothing is left to publish from.
            Err(join) => Err((
                io::Error::other(format!("staging {path} failed: {join}")),
                session,
                None,
            )),
        }
    }

    /// Waits until every file closed so far is published or failed, calling `progress` with
    /// (done, queued) now and then; `Err` lists the publishes that failed since the last wait
    /// (their data is kept in `pending/`).
    pub(crate) async fn wait(&self, mut progress: impl FnMut(usize, usize)) -> io::Result<()> {
        self.wait_until(|| {
            let (done, queued) = {
                let p = self.shared.progress();
                (p.done, p.queued)
            };
            progress(done, queued);
            done >= queued
        })
        .await;
        let failures = std::mem::take(&mut self.shared.progress().failures);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} closed file(s) could not be published: {}",
                failures.len(),
                failures.join("; ")
            )))
        }
    }

    /// Waits until no file closed under `path` waits for its publish, so that an open, a
    /// rename or a removal here sees the closed content.
    pub(crate) async fn settle(&self, path: &DfsPath) {
        self.wait_until(|| !self.shared.progress().paths.contains_key(path))
            .await
    }

    /// Waits until `done` holds, asking again after every finished publish and at least
    /// every 200 ms. `done` takes the progress lock itself, so it may call back into user
    /// code without holding it.
    async fn wait_until(&self, mut done: impl FnMut() -> bool) {
        loop {
            // Registered before the check, so a publish finishing in between still wakes us.
            let changed = self.shared.changed.notified();
            if done() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
        }
    }
}

/// A writeback directory as [`scan`] found it: its lock (held), the records of closed files
/// in close order, and the `pending/` directory.
type Scanned = (fs::File, Vec<(u64, Record)>, PathBuf);

/// Opens the directory: lock, clean-up of what was never acknowledged, the records in order.
fn scan(root: &Path) -> io::Result<Scanned> {
    let pending = root.join("pending");
    let spool = spool_dir(root);
    fs::create_dir_all(&pending)?;
    fs::create_dir_all(&spool)?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("lock"))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "the writeback directory {} is in use by another client",
                root.display()
            ),
        ));
    }
    // Files open for writing when an earlier process died: never closed, never acknowledged.
    for entry in fs::read_dir(&spool)? {
        let _ = fs::remove_file(entry?.path());
    }
    let mut records = Vec::new();
    let mut data = HashSet::new();
    for entry in fs::read_dir(&pending)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let seq = name
            .split_once('.')
            .and_then(|(seq, _)| u64::from_str_radix(seq, 16).ok());
        match (seq, path.extension().and_then(|e| e.to_str())) {
            (Some(seq), Some("json")) => match read_record(&path) {
                Ok(record) => records.push((seq, record)),
                Err(err) => {
                    tracing::error!(%err, record = %path.display(), "writeback: unreadable record left as it is")
                }
            },
            (Some(seq), Some("data")) => {
                data.insert(seq);
            }
            // A record being written when the process died: its close never returned.
            _ => {
                let _ = fs::remove_file(&path);
            }
        }
    }
    records.sort_by_key(|(seq, _)| *seq);
    // A record without data cannot happen (the data is named first) and is dropped if it
    // does; data left without a record is a close that never returned.
    records.retain(|(seq, record)| {
        let keep = data.remove(seq);
        if !keep {
            tracing::error!(path = %record.path, "writeback: a record without its data; dropped");
            let _ = fs::remove_file(record_path(&pending, *seq));
        }
        keep
    });
    for seq in data {
        let _ = fs::remove_file(data_path(&pending, seq));
    }
    Ok((lock, records, pending))
}

fn read_record(path: &Path) -> io::Result<Record> {
    let record: Record = serde_json::from_slice(&fs::read(path)?).map_err(io::Error::other)?;
    if record.schema > SCHEMA {
        return Err(io::Error::other(format!(
            "record schema {} is newer than this client's {SCHEMA}",
            record.schema
        )));
    }
    Ok(record)
}

/// Writes `record` durably as `path` (temp file, fsync, rename; the caller fsyncs the
/// directory).
fn write_record(path: &Path, record: &Record) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The durable half of a close: data fsynced and named (a second name, so that the spool
/// stays whole for a publish the usual way if a later step fails), then its record, then the
/// directory.
fn stage_blocking(
    shared: &Shared,
    seq: u64,
    spool: tempfile::TempPath,
    record: &Record,
) -> Result<(), (io::Error, tempfile::TempPath)> {
    let data = shared.data(seq);
    let staged = fs::File::open(&spool)
        .and_then(|f| f.sync_all())
        .and_then(|()| fs::hard_link(&spool, &data))
        .and_then(|()| write_record(&shared.record(seq), record))
        .and_then(|()| sync_dir(&shared.pending));
    match staged {
        Ok(()) => Ok(()),
        Err(err) => {
            let _ = fs::remove_file(shared.record(seq));
            let _ = fs::remove_file(&data);
            Err((err, spool))
        }
    }
}

/// The publishing task: one file at a time, in close order, until the client is gone and
/// the queue is empty.
async fn publish_all(
    shared: Arc<Shared>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    leases: Arc<Leases>,
    remote: Arc<Remote>,
) {
    while let Some(mut job) = jobs.recv().await {
        let data = shared.data(job.seq);
        let result = publish_one(&mut job, &data, &leases, &remote).await;
        if let Some(lease) = job.session.lease.take() {
            lease.release(&leases).await;
        }
        let record = shared.record(job.seq);
        let failure = match result {
            Ok(()) => {
                let pending = shared.pending.clone();
                let removed = tokio::task::spawn_blocking(move || {
                    fs::remove_file(&record)?;
                    let _ = fs::remove_file(&data);
                    sync_dir(&pending)
                })
                .await;
                if !matches!(removed, Ok(Ok(()))) {
                    tracing::warn!(path = %job.path, "writeback: published, but its record could not be removed (the next start finds it published)");
                }
                None
            }
            Err(err) => {
                tracing::error!(path = %job.path, %err, data = %data.display(), "writeback: the closed file cannot be published; kept");
                let message = format!("{}: {err} (kept in {})", job.path, data.display());
                let kept = Record {
                    schema: SCHEMA,
                    path: job.path.to_string(),
                    file_id: job.file_id,
                    base_version: job.session.base_version,
                    error: Some(err.to_string()),
                };
                let pending = shared.pending.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    write_record(&record, &kept).and_then(|()| sync_dir(&pending))
                })
                .await;
                Some(message)
            }
        };
        {
            let mut progress = shared.progress();
            progress.done += 1;
            if let Some(n) = progress.paths.get_mut(&job.path) {
                *n -= 1;
                if *n == 0 {
                    progress.paths.remove(&job.path);
                }
            }
            progress.failures.extend(failure);
        }
        shared.changed.notify_waiters();
    }
}

/// Publishes one job, retrying what waiting can cure. A recovered job whose file already
/// holds exactly its content was published by the process that closed it.
async fn publish_one(
    job: &mut Job,
    data: &Path,
    leases: &Leases,
    remote: &Remote,
) -> Result<(), ApiError> {
    let copy = PendingCopy(data.to_path_buf());
    let result = publish_retrying(
        &mut job.session,
        job.file_id,
        &job.path,
        &copy,
        leases,
        remote,
    )
    .await;
    match result {
        Err(err) if job.recovered && err.code == ErrorCode::Stale => {
            if already_published(job, data, remote).await {
                return Ok(());
            }
            Err(err)
        }
        other => other,
    }
}

/// Whether the file of `job` now holds exactly the content of `data` (same file, same size
/// and checksum): its publish landed before the process that closed it died.
async fn already_published(job: &Job, data: &Path, remote: &Remote) -> bool {
    let Ok(entry) = remote.names.stat(&job.path).await else {
        return false;
    };
    let same_size = fs::metadata(data).is_ok_and(|m| m.len() == entry.size);
    if entry.id != job.file_id || !same_size {
        return false;
    }
    let owned = data.to_path_buf();
    let sum = tokio::task::spawn_blocking(move || Checksum::of_file(&owned)).await;
    matches!(sum, Ok(Ok(sum)) if sum == entry.checksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_conflicts_and_refusals_end_the_retries() {
        for code in [
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::LeaseExpired,
            ErrorCode::Busy,
        ] {
            assert!(retries(&ApiError::new(code, "")), "{code:?}");
        }
        for code in [
            ErrorCode::Stale,
            ErrorCode::Fenced,
            ErrorCode::NotFound,
            ErrorCode::Forbidden,
        ] {
            assert!(!retries(&ApiError::new(code, "")), "{code:?}");
        }
        assert_eq!(pause(0), Duration::from_millis(200));
        assert_eq!(pause(30), MAX_PAUSE);
    }

    fn record(path: &str) -> Record {
        Record {
            schema: SCHEMA,
            path: path.into(),
            file_id: 7,
            base_version: 3,
            error: None,
        }
    }

    #[test]
    fn scan_keeps_acknowledged_closes_in_order_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pending = root.join("pending");
        fs::create_dir_all(&pending).unwrap();
        fs::create_dir_all(spool_dir(root)).unwrap();
        for seq in [3u64, 1] {
            fs::write(pending.join(format!("{seq:016x}.data")), b"x").unwrap();
            write_record(&pending.join(format!("{seq:016x}.json")), &record("/a")).unwrap();
        }
        // What a power cut can leave of closes that had not returned (the directory fsync is
        // their last step): data without its record, a record being written, a record whose
        // data name did not survive; and a spool of a file never closed.
        fs::write(pending.join(format!("{:016x}.data", 5)), b"y").unwrap();
        fs::write(pending.join(format!("{:016x}.json.tmp", 5)), b"{").unwrap();
        write_record(&pending.join(format!("{:016x}.json", 6)), &record("/b")).unwrap();
        fs::write(spool_dir(root).join(".dfs-spool-1"), b"z").unwrap();
        let (lock, records, _) = scan(root).unwrap();
        assert_eq!(records.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 3]);
        for gone in ["5.data", "5.json.tmp", "6.json"] {
            let (seq, ext) = gone.split_once('.').unwrap();
            let name = format!("{:016x}.{ext}", seq.parse::<u64>().unwrap());
            assert!(!pending.join(name).exists(), "{gone} is dropped");
        }
        assert_eq!(fs::read_dir(spool_dir(root)).unwrap().count(), 0);
        let err = scan(root).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
        drop(lock);
        assert!(scan(root).is_ok(), "the lock goes with its holder");
    }

    #[test]
    fn a_record_from_a_newer_release_is_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.json");
        let mut newer = record("/a");
        newer.schema = SCHEMA + 1;
        write_record(&path, &newer).unwrap();
        assert!(read_record(&path).is_err());
    }
}
