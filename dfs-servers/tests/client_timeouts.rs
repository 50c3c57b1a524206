//! Blob transfers time out on silence, not on length (review item 8): `FileClient` with shrunk
//! limits against a real in-process fileserver, and against a raw TCP server that freezes.

use bytes::Bytes;
use dfs_proto::client::{FileClient, Timeouts};
use dfs_proto::{Checksum, ErrorCode};
use dfs_servers::fileserver;
use futures_util::StreamExt;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STALL: Duration = Duration::from_millis(500);

fn shrunk() -> Timeouts {
    Timeouts {
        stall: STALL,
        reply_after_body: Duration::from_secs(3),
        whole_blob: Duration::from_secs(5),
    }
}

/// A stand-alone fileserver; returns its URL and the sender that stops it.
async fn fileserver(data: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = fileserver::Config {
        data: data.to_owned(),
        nameserver: String::new(),
        insecure: true,
        ..fileserver::Config::default()
    };
    let server = fileserver::Fileserver::start(listener, config)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    (url, tx)
}

/// `chunks` chunks of `size` bytes, one every `every`, after `pause_after` chunks a pause of
/// `pause`.
fn slow_body(
    chunks: usize,
    size: usize,
    every: Duration,
    pause_after: usize,
    pause: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + Sync + 'static {
    futures_util::stream::iter(0..chunks).then(move |i| async move {
        tokio::time::sleep(every).await;
        if i == pause_after {
            tokio::time::sleep(pause).await;
        }
        Ok(Bytes::from(vec![(i % 256) as u8; size]))
    })
}

fn slow_content(chunks: usize, size: usize) -> Vec<u8> {
    (0..chunks)
        .flat_map(|i| vec![(i % 256) as u8; size])
        .collect()
}

#[tokio::test]
async fn an_upload_longer_than_the_stall_limit_succeeds_while_it_makes_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = fileserver(dir.path()).await;
    let client = FileClient::new().with_timeouts(shrunk());
    let (chunks, size) = (40, 4096);
    let content = slow_content(chunks, size);
    let every = Duration::from_millis(50);

    // The root cause: a client whose read timeout counts from when the request was sent cuts
    // off a slow upload although every chunk arrived in time.
    let old = FileClient::with_http(
        reqwest::Client::builder()
            .tls_backend_preconfigured((*dfs_proto::tls::process_default().unwrap()).clone())
            .read_timeout(STALL)
            .build()
            .unwrap(),
    );
    let cut = old
        .upload(
            &url,
            1,
            1,
            Checksum::of(&content),
            content.len() as u64,
            reqwest::Body::wrap_stream(slow_body(chunks, size, every, usize::MAX, Duration::ZERO)),
        )
        .await;
    assert!(cut.is_err(), "a read timeout cut the upload: {cut:?}");

    // 2 s of steady streaming, four times the stall limit: it must succeed.
    let started = Instant::now();
    let info = client
        .upload_stream(
            &url,
            1,
            2,
            Some(Checksum::of(&content)),
            content.len() as u64,
            slow_body(chunks, size, every, usize::MAX, Duration::ZERO),
        )
        .await
        .unwrap();
    assert!(started.elapsed() > STALL * 3);
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(client.download_bytes(&url, 1, 2).await.unwrap(), content);
}

#[tokio::test]
async fn an_upload_that_stalls_fails_after_the_stall_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = fileserver(dir.path()).await;
    let client = FileClient::new().with_timeouts(shrunk());
    let (chunks, size) = (10, 4096);
    let content = slow_content(chunks, size);
    let started = Instant::now();
    let err = client
        .upload_stream(
            &url,
            2,
            1,
            Some(Checksum::of(&content)),
            content.len() as u64,
            slow_body(
                chunks,
                size,
                Duration::from_millis(10),
                3,
                Duration::from_secs(5),
            ),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(err.message.contains("stalled"), "{err}");
    assert!(took >= STALL && took < Duration::from_secs(3), "{took:?}");
    // Nothing was stored.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(client.list(&url).await.unwrap().blobs.is_empty());
}

/// A server that answers a download's headers and some bytes, then freezes: the download
/// fails after the stall limit instead of hanging.
#[tokio::test]
async fn a_download_that_stalls_fails_after_the_stall_limit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).await;
        let _ = conn
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
            .await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(conn);
    });
    let client = FileClient::new().with_timeouts(shrunk());
    let dir = tempfile::tempdir().unwrap();
    let mut dest = tokio::fs::File::create(dir.path().join("out"))
        .await
        .unwrap();
    let started = Instant::now();
    let err = client
        .download_to(&url, 1, 1, Checksum(0), 1000, &mut dest)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(took >= STALL && took < Duration::from_secs(3), "{took:?}");
}
