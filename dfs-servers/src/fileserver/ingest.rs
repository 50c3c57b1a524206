//! Streams a request body (upload or fetch) into the store: big writes on a blocking thread,
//! limits and a per-chunk read timeout on the async side.

use super::routes::AppState;
use super::stats::Stats;
use super::store::Chunk;
use bytes::{Bytes, BytesMut};
use dfs_proto::files::BlobInfo;
use dfs_proto::{ApiError, Checksum, ErrorCode, FileId, Version};
use futures_util::{Stream, StreamExt};
use std::fmt::Display;
use std::time::Duration;
use tokio::time::Instant;

/// Size of each disk write: few syscalls, bounded memory (a handful per upload in flight).
pub const WRITE_CHUNK: usize = 1 << 20;

/// Bodies up to this size are buffered whole before they are written (see [`ingest`]).
pub const SMALL_BODY: u64 = 256 << 10;

/// A body that sends nothing for this long is abandoned.
pub const BODY_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes `body` as (file_id, version); returns once it is durable and visible.
///
/// Refuses a body longer than `expected_len` or than the server's limit (413, cut off at that
/// point), and one whose length or checksum differ from what was announced (422; a `None`
/// checksum announces none, and the one computed is stored and returned). Nothing is stored
/// unless the whole body checks out.
pub async fn ingest<S, E>(
    st: &AppState,
    file_id: FileId,
    version: Version,
    checksum: Option<Checksum>,
    expected_len: Option<u64>,
    mut body: S,
) -> Result<BlobInfo, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    // Room for every chunk `feed` sends of a small body (one, below WRITE_CHUNK) + Finish.
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let store = st.store.clone();
    let write = move || store.write_upload(file_id, version, checksum, expected_len, rx);
    let limit = expected_len.map_or(st.max_body_bytes, |l| l.min(st.max_body_bytes));
    let (fed, written) = if expected_len.is_some_and(|len| len <= SMALL_BODY) {
        // A small body is taken whole before the writer starts: no wake-up per chunk, and
        // with everything queued the write runs on this thread (no hop to the blocking
        // pool), which matters at thousands of files a second. A refused body never
        // reaches the disk.
        let fed = feed(st, &mut body, limit, tx).await;
        if let Err(Some(err)) = fed {
            return Err(err);
        }
        (fed, crate::common::run_blocking(write).await)
    } else {
        let writer = tokio::task::spawn_blocking(write);
        let fed = feed(st, &mut body, limit, tx).await;
        let written = writer
            .await
            .map_err(|err| ApiError::internal(format!("upload task failed: {err}")))?;
        (fed, written)
    };
    match fed {
        // The writer stopped first (disk error, ...): its error says why.
        Ok(()) | Err(None) => {
            let info = written?;
            Stats::add(&st.stats.uploads, 1);
            Ok(info)
        }
        Err(Some(err)) => Err(err),
    }
}

/// The minimum average rate of a body: after `grace`, at least `min_rate` bytes a second
/// since the start, so a sender trickling a byte now and then is cut off however short each
/// gap is (the per-chunk [`BODY_CHUNK_TIMEOUT`] only catches a sender that stops).
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    start: Instant,
    grace: Duration,
    /// Bytes a second; 0 is no minimum.
    min_rate: u64,
}

impl Pace {
    /// A pace that starts now.
    pub fn new(grace_ms: u64, min_rate: u64) -> Pace {
        Pace {
            start: Instant::now(),
            grace: Duration::from_millis(grace_ms),
            min_rate,
        }
    }

    /// When a body that has sent `total` bytes so far falls below the rate, unless more
    /// arrives before: the later of the grace's end and the moment `total` bytes is exactly
    /// the minimum. `None` without a minimum.
    pub fn deadline(&self, total: u64) -> Option<Instant> {
        if self.min_rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(total as f64 / self.min_rate as f64);
        Some(self.start + self.grace.max(earned))
    }

    /// The error that ends a body cut off at a deadline (`too_slow`: the rate's, else the
    /// per-chunk stall's).
    fn refusal(&self, too_slow: bool, total: u64) -> ApiError {
        if !too_slow {
            return ApiError::bad_request("request body stalled");
        }
        let secs = self.start.elapsed().as_secs_f64();
        tracing::info!(total, secs, "upload below the minimum rate; cut off");
        ApiError::bad_request(format!(
            "upload too slow: {total} bytes in {secs:.1} s, below the minimum of {} bytes/s \
             (after {} ms); nothing stored",
            self.min_rate,
            self.grace.as_millis()
        ))
    }
}

/// Pumps the body to the writer. `Err(None)` means the writer hung up.
async fn feed<S, E>(
    st: &AppState,
    body: &mut S,
    limit: u64,
    tx: tokio::sync::mpsc::Sender<Chunk>,
) -> Result<(), Option<ApiError>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let mut buf = BytesMut::new();
    let mut total = 0u64;
    let pace = Pace::new(
        st.limits.upload_grace_ms,
        st.limits.upload_min_bytes_per_sec,
    );
    loop {
        let stall = Instant::now() + BODY_CHUNK_TIMEOUT;
        let deadline = pace.deadline(total).map_or(stall, |d| d.min(stall));
        let next = tokio::time::timeout_at(deadline, body.next())
            .await
            .map_err(|_| Some(pace.refusal(deadline < stall, total)))?;
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => {
                return Err(Some(ApiError::bad_request(format!(
                    "request body ended early: {err}"
                ))))
            }
        };
        total += chunk.len() as u64;
        Stats::add(&st.stats.bytes_in, chunk.len() as u64);
        if total > limit {
            return Err(Some(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("body longer than the {limit} bytes announced or allowed"),
            )));
        }
        if buf.is_empty() && chunk.len() >= WRITE_CHUNK {
            tx.send(Chunk::Data(chunk)).await.map_err(|_| None)?;
            continue;
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= WRITE_CHUNK {
            let full = std::mem::replace(&mut buf, BytesMut::with_capacity(WRITE_CHUNK));
            tx.send(Chunk::Data(full.freeze()))
                .await
                .map_err(|_| None)?;
        }
    }
    if !buf.is_empty() {
        tx.send(Chunk::Data(buf.freeze())).await.map_err(|_| None)?;
    }
    tx.send(Chunk::Finish).await.map_err(|_| None)
}
