//! An open DFS file: a whole-file local copy (the spool) and, in write mode, its write
//! session (lease renewed in the background, publish on close).
//!
//! Reads, writes and seeks go to the spool file, a local temporary file; they are done
//! inline (local disk I/O, like a page-cache write), so both the async [`File`] and
//! [`crate::blocking::File`] are this one implementation. [`File::sync_all`] and
//! [`File::close`] publish the spool as a new version: they return `Ok` only once it is
//! durable on the fileservers and committed at the nameserver.

use crate::client::Shared;
use crate::write::{publish_io_error, LocalCopy, WriteSession};
use dfs_proto::names::Entry;
use dfs_proto::{ApiError, DfsPath, ErrorCode, FileId};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The write half of a [`File`]: the protocol session and the spool it publishes.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    session: WriteSession,
    spool: tempfile::TempPath,
}

/// The spool file as the [`LocalCopy`] a write session publishes.
struct Spool<'a>(&'a Path);

impl LocalCopy for Spool<'_> {
    fn path(&self) -> &Path {
        self.0
    }

    fn publish_failed(&self, path: &DfsPath, err: &ApiError) {
        tracing::warn!(%path, %err, "publish failed; the changes stay in the open file");
    }
}

impl Writer {
    /// A writer publishing `spool` through `session`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        session: WriteSession,
        spool: tempfile::TempPath,
    ) -> Writer {
        Writer {
            shared,
            session,
            spool,
        }
    }

    /// Publishes the spool if it changed since the last publish.
    async fn publish(&mut self, file_id: FileId, path: &DfsPath) -> io::Result<()> {
        let shared = &self.shared;
        self.session
            .publish(
                file_id,
                path,
                &Spool(&self.spool),
                &shared.leases,
                &shared.remote,
            )
            .await
            .map_err(publish_io_error)
    }

    /// Ends the write: publishes what is left (unless `explicit` is false and the last
    /// publish of this content already failed: that error was reported, and publishing now
    /// would turn it into a silent success), gives the lease back, and on failure keeps the
    /// spool file under its name so the changes can be recovered (when `keep`: a caller
    /// that still has the bytes does not need it).
    pub(crate) async fn finish(
        mut self,
        file_id: FileId,
        path: &DfsPath,
        explicit: bool,
        keep: bool,
    ) -> io::Result<()> {
        if explicit && self.session.changed && !self.session.lease_lost() {
            match self.try_stage(file_id, path).await? {
                Some(writer) => self = writer,
                None => return Ok(()),
            }
        }
        let result = if self.session.changed && !explicit && self.session.failed {
            Err(io::Error::other(format!(
                "the last publish of {path} failed"
            )))
        } else {
            self.publish(file_id, path).await
        };
        if let Some(lease) = self.session.lease.take() {
            lease.release(&self.shared.leases).await;
        }
        match result {
            Err(err) if keep => Err(self.keep(path, err)),
            other => other,
        }
    }

    /// With writeback, hands the closed content to the writeback directory, which publishes
    /// it later under this lease: `None` once it is durable there. `Some` gives the writer
    /// back to publish now: no writeback, or the content could not be kept there.
    async fn try_stage(self, file_id: FileId, path: &DfsPath) -> io::Result<Option<Writer>> {
        let shared = self.shared.clone();
        let Some(wb) = shared.writeback().await? else {
            return Ok(Some(self));
        };
        let Writer {
            shared,
            session,
            spool,
        } = self;
        match wb.stage(spool, session, file_id, path).await {
            Ok(()) => Ok(None),
            Err((err, session, Some(spool))) => {
                tracing::warn!(%path, %err, "writeback: cannot keep the closed file locally; publishing it now");
                Ok(Some(Writer {
                    shared,
                    session,
                    spool,
                }))
            }
            Err((err, mut session, None)) => {
                if let Some(lease) = session.lease.take() {
                    lease.release(&shared.leases).await;
                }
                Err(err)
            }
        }
    }

    /// Keeps the spool file (the unpublished content) and says where in the error.
    fn keep(self, path: &DfsPath, err: io::Error) -> io::Error {
        match self.spool.keep() {
            Ok(kept) => {
                tracing::error!(%path, %err, kept = %kept.display(), "changes not published; kept for recovery");
                let kind = err.kind();
                let api = err
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<ApiError>())
                    .map_or(ErrorCode::Internal, |e| e.code);
                io::Error::new(
                    kind,
                    ApiError::new(api, format!("{err} (changes kept in {})", kept.display())),
                )
            }
            Err(keep_err) => {
                tracing::error!(%path, %err, %keep_err, "changes not published and not kept");
                err
            }
        }
    }

    /// Whether there is anything to do at the end (a change, or a lease to give back).
    fn needs_finish(&self) -> bool {
        self.session.changed || self.session.lease.is_some()
    }
}

/// An open file of a DFS cluster: the whole version downloaded at open into a local spool
/// file, read and written there; in write mode published by [`File::close`] or
/// [`File::sync_all`].
///
/// Implements tokio's `AsyncRead`, `AsyncWrite` and `AsyncSeek`. `flush` and `shutdown`
/// only flush the local spool: **publishing is [`File::close`]** (or [`File::sync_all`]),
/// whose result says whether the changes are in the cluster.
///
/// Dropping a changed write-mode `File` without `close` publishes it from a task spawned on
/// the current tokio runtime and logs any error (nobody can see it); outside a runtime, or
/// if the runtime shuts down first, the change is not published (the spool file is kept and
/// its path logged) and the lease expires after its TTL. Call `close` to know.
#[derive(Debug)]
pub struct File {
    spool: std::fs::File,
    path: DfsPath,
    entry: Entry,
    writer: Option<Writer>,
    append: bool,
    /// Result of the last `start_seek`, for `poll_complete`.
    seeked: Option<io::Result<u64>>,
}

impl File {
    /// An open file over `spool` (the local copy of `entry`), writable when `writer` is
    /// given; `append` sends every write to the end.
    pub(crate) fn new(
        spool: std::fs::File,
        path: DfsPath,
        entry: Entry,
        writer: Option<Writer>,
        append: bool,
    ) -> File {
        File {
            spool,
            path,
            entry,
            writer,
            append,
            seeked: None,
        }
    }

    /// The path this file was opened under.
    pub fn path(&self) -> &DfsPath {
        &self.path
    }

    /// The nameserver's record of the file as this open saw it (the version it is based on).
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Whether this file was opened for writing (and holds the write lease).
    pub fn is_writable(&self) -> bool {
        self.writer.is_some()
    }

    /// The size of the local copy now (with unpublished changes).
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.spool.metadata()?.len())
    }

    /// Whether the local copy is empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Truncates or extends the local copy to `size` bytes (published at close).
    pub fn set_len(&mut self, size: u64) -> io::Result<()> {
        let writer = self.writable()?;
        writer.session.mark_changed();
        self.spool.set_len(size)
    }

    /// The writer, when this file may be written now: open for writing, lease not lost.
    fn writable(&mut self) -> io::Result<&mut Writer> {
        let path = &self.path;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        if writer.session.lease_lost() {
            return Err(ApiError::new(
                ErrorCode::LeaseExpired,
                format!("the write lease on {path} was lost; writes and close fail"),
            )
            .into());
        }
        Ok(writer)
    }

    /// Publishes the changes made so far without closing: `Ok` once the new version is
    /// durable and committed. Does nothing when nothing changed since the last publish.
    pub async fn sync_all(&mut self) -> io::Result<()> {
        let (id, path) = (self.entry.id, self.path.clone());
        match &mut self.writer {
            Some(writer) => writer.publish(id, &path).await,
            None => Ok(()),
        }
    }

    /// Closes the file: publishes unsent changes and gives the lease back. `Ok` only once
    /// the new version is durable and committed; on error the changes are not lost (the
    /// spool file is kept and named in the error). With writeback
    /// ([`crate::ClientBuilder::writeback`]) `Ok` once the changes are durable in the
    /// writeback directory; the publish follows in the background, holding the lease.
    pub async fn close(self) -> io::Result<()> {
        self.close_keeping(true).await
    }

    /// [`File::close`], keeping the spool of a failed publish only when `keep`.
    pub(crate) async fn close_keeping(mut self, keep: bool) -> io::Result<()> {
        match self.writer.take() {
            Some(writer) => writer.finish(self.entry.id, &self.path, true, keep).await,
            None => Ok(()),
        }
    }

    /// The entry of the version the last successful [`File::sync_all`] (or publish)
    /// of this file made, if any: its version, size and checksum as committed.
    pub fn published(&self) -> Option<&Entry> {
        self.writer.as_ref()?.session.last_entry.as_ref()
    }

    /// Takes the writer out when there is work left at the end (for the blocking drop).
    pub(crate) fn take_unfinished(&mut self) -> Option<(Writer, FileId, DfsPath)> {
        if self.writer.as_ref().is_some_and(Writer::needs_finish) {
            let writer = self.writer.take()?;
            return Some((writer, self.entry.id, self.path.clone()));
        }
        None
    }

    /// `std::io::Read` on the local copy.
    pub(crate) fn read_local(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.spool.read(buf)
    }

    /// `std::io::Write` on the local copy; fails once the lease is lost.
    pub(crate) fn write_local(&mut self, buf: &[u8]) -> io::Result<usize> {
        let writer = self.writable()?;
        if !buf.is_empty() {
            writer.session.mark_changed();
        }
        if self.append {
            // O_APPEND moves the offset to the end at the write; keep Seek consistent.
            self.spool.seek(SeekFrom::End(0))?;
        }
        self.spool.write(buf)
    }

    /// `std::io::Seek` on the local copy.
    pub(crate) fn seek_local(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.spool.seek(pos)
    }
}

/// Ends a dropped write: publishes and logs the outcome, since nobody can see it.
pub(crate) async fn finish_dropped(writer: Writer, id: FileId, path: DfsPath) {
    match writer.finish(id, &path, false, true).await {
        Ok(()) => tracing::debug!(%path, "dropped file published"),
        Err(err) => {
            tracing::error!(%path, %err, "a file dropped without close() was not published")
        }
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let Some((writer, id, path)) = self.take_unfinished() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(finish_dropped(writer, id, path));
            }
            Err(_) => {
                let err =
                    io::Error::other("dropped outside a tokio runtime: nothing can publish it");
                let err = writer.keep(&path, err);
                tracing::error!(%path, %err, "a file dropped without close() was not published; its lease expires by itself");
            }
        }
    }
}

impl tokio::io::AsyncRead for File {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.read_local(buf.initialize_unfilled())?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for File {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.get_mut().write_local(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncSeek for File {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        this.seeked = Some(this.seek_local(position));
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        Poll::Ready(match this.seeked.take() {
            Some(result) => result,
            None => this.spool.stream_position(),
        })
    }
}
