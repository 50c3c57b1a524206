//! Request, transfer and fsync counters, so tests and benchmarks can prove what was (not)
//! sent and count the durable steps.

use crate::common::fsyncs::Counter;
use dfs_proto::files::FileserverStats;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters behind `GET /v1/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// HTTP requests received.
    pub requests: AtomicU64,
    /// Uploads and fetches committed.
    pub uploads: AtomicU64,
    /// Blob GETs started.
    pub downloads: AtomicU64,
    /// Body bytes received.
    pub bytes_in: AtomicU64,
    /// Body bytes sent.
    pub bytes_out: AtomicU64,
    /// fsyncs of blobs and directories (shared with the store's [`super::storage::CountingStorage`]).
    pub fsyncs: Counter,
}

impl Stats {
    /// Bumps one counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy for the wire.
    pub fn snapshot(&self) -> FileserverStats {
        FileserverStats {
            requests: self.requests.load(Ordering::Relaxed),
            uploads: self.uploads.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.get(),
        }
    }
}
