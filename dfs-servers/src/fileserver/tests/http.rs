//! Upload, download, ranges, idempotency, delete, list, fetch, stats, restart.

use super::{client, eventually, pattern, TestServer};
use dfs_proto::files::FetchRequest;
use dfs_proto::{Checksum, ErrorCode, CHECKSUM_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn multi_mib_round_trip_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |_| {}).await;
    let c = client();
    let data = pattern(5 << 20 | 123, 1);
    let info = c.upload_bytes(&fs.url, 42, 7, data.clone()).await.unwrap();
    assert_eq!(
        (info.file_id, info.version, info.size),
        (42, 7, data.len() as u64)
    );
    assert_eq!(info.checksum, Checksum::of(&data));
    assert_eq!(c.download_bytes(&fs.url, 42, 7).await.unwrap(), data);

    // Streamed from a file and into a file, checked on the way.
    let local = dir.path().join("local.bin");
    std::fs::write(&local, &data[..3 << 20]).unwrap();
    let sum = Checksum::of(&data[..3 << 20]);
    let stored = c.upload_file(&fs.url, 42, 8, &local).await.unwrap();
    assert_eq!((stored.size, stored.checksum), (3 << 20, sum));
    let out = dir.path().join("out.bin");
    let mut file = tokio::fs::File::create(&out).await.unwrap();
    let n = c
        .download_to(&fs.url, 42, 8, sum, 3 << 20, &mut file)
        .await
        .unwrap();
    assert_eq!(n, 3 << 20);
    assert_eq!(std::fs::read(&out).unwrap(), &data[..3 << 20]);

    let list = c.list(&fs.url).await.unwrap().blobs;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0], info);
    let stats = c.stats(&fs.url).await.unwrap();
    assert_eq!(stats.uploads, 2);
    assert_eq!(stats.downloads, 2);
    let total = (data.len() + (3 << 20)) as u64;
    assert_eq!(stats.bytes_in, total);
    assert_eq!(stats.bytes_out, total);
    assert!(stats.requests >= 5);
    assert!(fs.temp_files().is_empty());
    c.healthz(&fs.url).await.unwrap();
    fs.stop().await;
}

#[tokio::test]
async fn an_upload_without_checksum_stores_and_returns_the_one_received() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |_| {}).await;
    let data = pattern(700_000, 9);
    let reply = dfs_proto::client::http_client()
        .put(format!("{}/v1/blobs/5/1", fs.url))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), reqwest::StatusCode::CREATED);
    let info: dfs_proto::files::BlobInfo = reply.json().await.unwrap();
    assert_eq!((info.size, info.checksum), (700_000, Checksum::of(&data)));
    let c = client();
    assert_eq!(c.download_bytes(&fs.url, 5, 1).await.unwrap(), data);
    assert_eq!(c.list(&fs.url).await.unwrap().blobs, vec![info]);
    fs.stop().await;
}

#[tokio::test]
async fn checksum_mismatch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |_| {}).await;
    let c = client();
    let data = pattern(100_000, 2);
    let wrong = Checksum(Checksum::of(&data).0 ^ 1);
    let err = c
        .upload(&fs.url, 1, 1, wrong, data.len() as u64, data.clone().into())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChecksumMismatch);
    assert!(c.list(&fs.url).await.unwrap().blobs.is_empty());
    assert_eq!(
        c.download_bytes(&fs.url, 1, 1).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert!(fs.temp_files().is_empty());
    assert_eq!(c.stats(&fs.url).await.unwrap().uploads, 0);
    fs.stop().await;
}

/// Sends raw bytes and returns everything the server answers until it closes.
async fn raw(url: &str, request: &[u8], close_write: bool) -> String {
    let addr = url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(request).await.unwrap();
    if close_write {
        sock.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sock.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

fn put_head(id: u64, len: usize, sum: Checksum) -> Vec<u8> {
    format!(
        "PUT /v1/blobs/{id}/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {len}\r\n{CHECKSUM_HEADER}: {sum}\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn bodies_shorter_or_longer_than_announced_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |c| c.max_body_bytes = 1 << 20).await;
    let c = client();
    let body = pattern(2000, 3);

    // Shorter: the client announces 2000 bytes, sends 1000 and closes.
    let mut req = put_head(1, 2000, Checksum::of(&body));
    req.extend_from_slice(&body[..1000]);
    let reply = raw(&fs.url, &req, true).await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
        "{reply}"
    );

    // Longer: 1000 announced, 2000 sent with the checksum of all 2000.
    let mut req = put_head(2, 1000, Checksum::of(&body));
    req.extend_from_slice(&body);
    let reply = raw(&fs.url, &req, false).await;
    assert!(reply.starts_with("HTTP/1.1 422"), "{reply}");
    assert!(reply.contains("checksum_mismatch"), "{reply}");

    // No Content-Length (chunked): refused.
    let req = format!(
        "PUT /v1/blobs/3/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n{CHECKSUM_HEADER}: {}\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Checksum::of(b"hello")
    );
    let reply = raw(&fs.url, req.as_bytes(), false).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");

    // Over the configured limit: 413 before reading the body.
    let big = pattern((1 << 20) + 1, 4);
    let err = c.upload_bytes(&fs.url, 4, 1, big).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PayloadTooLarge);

    eventually("temp files gone", || async { fs.temp_files().is_empty() }).await;
    assert!(c.list(&fs.url).await.unwrap().blobs.is_empty());
    fs.stop().await;
}

#[tokio::test]
async fn ranges_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |_| {}).await;
    let c = client();
    let data = pattern(1000, 5);
    c.upload_bytes(&fs.url, 9, 9, data.clone()).await.unwrap();
    let http = dfs_proto::client::http_client();
    let url = format!("{}/v1/blobs/9/9", fs.url);
    for (range, start, end) in [
        ("bytes=0-9", 0usize, 9usize),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=995-2000", 995, 999),
    ] {
        let reply = http.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(reply.status(), 206, "{range}");
        assert_eq!(
            reply.headers()["content-range"].to_str().unwrap(),
            format!("bytes {start}-{end}/1000")
        );
        assert_eq!(reply.bytes().await.unwrap(), &data[start..=end]);
    }
    let reply = c.get(&fs.url, 9, 9, Some((100, Some(199)))).await.unwrap();
    assert_eq!(reply.bytes().await.unwrap(), &data[100..200]);

    let reply = http
        .get(&url)
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 416);
    assert_eq!(reply.headers()["content-range"], "bytes */1000");
    let body: serde_json::Value = reply.json().await.unwrap();
    assert!(body["code"].is_string());

    let before = c.stats(&fs.url).await.unwrap();
    let reply = http.head(&url).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["content-length"], "1000");
    assert_eq!(
        reply.headers()[CHECKSUM_HEADER],
        Checksum::of(&data).to_string().as_str()
    );
    let after = c.stats(&fs.url).await.unwrap();
    assert_eq!(after.downloads, before.downloads, "HEAD is not a download");
    assert_eq!(after.bytes_out, before.bytes_out);
    fs.stop().await;
}

#[tokio::test]
async fn reupload_is_idempotent_and_conflicts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |_| {}).await;
    let c = client();
    let data = pattern(70_000, 6);
    let first = c.upload_bytes(&fs.url, 5, 1, data.clone()).await.unwrap();
    let again = c.upload_bytes(&fs.url, 5, 1, data.clone()).await.unwrap();
    assert_eq!(first, again);
    let err = c
        .upload_bytes(&fs.url, 5, 1, pattern(70_000, 7))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);
    assert_eq!(c.download_bytes(&fs.url, 5, 1).await.unwrap(), data);
    assert_eq!(c.list(&fs.url).await.unwrap().blobs.len(), 1);
    assert!(fs.temp_files().is_empty());

    // Concurrent identical uploads of one key all succeed with one blob.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url, data) = (c.clone(), fs.url.clone(), pattern(300_000, 8));
        tasks.push(tokio::spawn(async move {
            c.upload_bytes(&url, 6, 1, data).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(c.list(&fs.url).await.unwrap().blobs.len(), 2);
    let files: usize = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(files, 2);
    fs.stop().await;
}

#[tokio::test]
async fn delete_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |_| {}).await;
    let c = client();
    for v in 1..=3 {
        c.upload_bytes(&fs.url, 11, v, pattern(1000 * v as usize, v))
            .await
            .unwrap();
    }
    c.upload_bytes(&fs.url, 12, 1, Vec::new()).await.unwrap();
    c.delete(&fs.url, 11, 2).await.unwrap();
    assert_eq!(
        c.delete(&fs.url, 11, 2).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        c.download_bytes(&fs.url, 11, 2).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    let list = c.list(&fs.url).await.unwrap().blobs;
    let keys: Vec<(u64, u64, u64)> = list
        .iter()
        .map(|b| (b.file_id, b.version, b.size))
        .collect();
    assert_eq!(keys, vec![(11, 1, 1000), (11, 3, 3000), (12, 1, 0)]);
    assert_eq!(
        c.download_bytes(&fs.url, 12, 1).await.unwrap(),
        Vec::<u8>::new()
    );
    fs.stop().await;
}

#[tokio::test]
async fn fetch_copies_from_another_fileserver() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestServer::start(da.path(), |_| {}).await;
    let b = TestServer::start(db.path(), |_| {}).await;
    let c = client();
    let data = pattern(3 << 20, 9);
    let info = c.upload_bytes(&a.url, 20, 1, data.clone()).await.unwrap();
    let req = FetchRequest {
        source: a.url.clone(),
        checksum: info.checksum,
    };
    let copied = c.fetch(&b.url, 20, 1, &req).await.unwrap();
    assert_eq!(copied, info);
    assert_eq!(c.download_bytes(&b.url, 20, 1).await.unwrap(), data);
    assert_eq!(c.stats(&a.url).await.unwrap().downloads, 1);

    // Already there: nothing is transferred again.
    c.fetch(&b.url, 20, 1, &req).await.unwrap();
    assert_eq!(c.stats(&a.url).await.unwrap().downloads, 1);

    // Wrong checksum: refused, nothing stored.
    c.upload_bytes(&a.url, 21, 1, pattern(5000, 10))
        .await
        .unwrap();
    let bad = FetchRequest {
        source: a.url.clone(),
        checksum: Checksum(1),
    };
    assert_eq!(
        c.fetch(&b.url, 21, 1, &bad).await.unwrap_err().code,
        ErrorCode::ChecksumMismatch
    );
    assert!(b.temp_files().is_empty());
    // Missing on the source.
    assert_eq!(
        c.fetch(&b.url, 22, 1, &bad).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(c.list(&b.url).await.unwrap().blobs, vec![info]);
    // Source down: retryable error, not a 500.
    let down = FetchRequest {
        source: "http://127.0.0.1:1".into(),
        checksum: Checksum(1),
    };
    assert_eq!(
        c.fetch(&b.url, 23, 1, &down).await.unwrap_err().code,
        ErrorCode::Unavailable
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn restart_keeps_blobs_and_drops_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |_| {}).await;
    let c = client();
    let data = pattern(200_000, 11);
    let info = c.upload_bytes(&fs.url, 30, 1, data.clone()).await.unwrap();
    let id = fs.id.clone();
    fs.stop().await;

    // A crash left a temp file and a torn blob (its size differs from its name).
    std::fs::write(
        dir.path()
            .join("tmp/0000000000000001-0000000000000001-0.tmp"),
        b"partial",
    )
    .unwrap();
    let torn = dfs_proto::files::BlobInfo {
        file_id: 30,
        version: 2,
        size: 100,
        checksum: Checksum(0),
    };
    let torn_path = dir
        .path()
        .join("blobs")
        .join(crate::fileserver::store::fan(30, 2))
        .join(crate::fileserver::store::blob_name(&torn));
    std::fs::create_dir_all(torn_path.parent().unwrap()).unwrap();
    std::fs::write(&torn_path, b"short").unwrap();

    let fs = TestServer::start(dir.path(), |_| {}).await;
    assert_eq!(fs.id, id, "server id is stable across restarts");
    assert!(fs.temp_files().is_empty());
    assert_eq!(c.list(&fs.url).await.unwrap().blobs, vec![info]);
    assert_eq!(c.download_bytes(&fs.url, 30, 1).await.unwrap(), data);
    assert!(!torn_path.exists());
    fs.stop().await;
}

#[tokio::test]
async fn verify_reports_good_missing_and_removes_corrupt_blobs() {
    use dfs_proto::files::BlobState;
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |_| {}).await;
    let c = client();
    let good = c
        .upload_bytes(&fs.url, 40, 1, pattern(300_000, 3))
        .await
        .unwrap();
    let bad = c
        .upload_bytes(&fs.url, 40, 2, pattern(300_000, 4))
        .await
        .unwrap();
    let gone = c
        .upload_bytes(&fs.url, 40, 3, b"gone".to_vec())
        .await
        .unwrap();
    let path = |info: &dfs_proto::files::BlobInfo| {
        dir.path()
            .join("blobs")
            .join(crate::fileserver::store::fan(info.file_id, info.version))
            .join(crate::fileserver::store::blob_name(info))
    };
    // Flip one byte of one blob in place (same length), delete another's file.
    let mut bytes = std::fs::read(path(&bad)).unwrap();
    bytes[12_345] ^= 1;
    std::fs::write(path(&bad), &bytes).unwrap();
    std::fs::remove_file(path(&gone)).unwrap();

    let check = c.verify(&fs.url, 40, 1).await.unwrap();
    assert_eq!((check.state, check.recorded), (BlobState::Good, Some(good)));
    let check = c.verify(&fs.url, 40, 2).await.unwrap();
    assert_eq!(
        (check.state, check.recorded),
        (BlobState::Corrupt, Some(bad.clone()))
    );
    assert_eq!(
        c.verify(&fs.url, 40, 3).await.unwrap().state,
        BlobState::Missing
    );
    assert_eq!(
        c.verify(&fs.url, 99, 1).await.unwrap().state,
        BlobState::Missing
    );
    // The corrupt and the vanished blob are neither listed nor served any more.
    let listed: Vec<_> = c.list(&fs.url).await.unwrap().blobs;
    assert_eq!(
        listed.iter().map(|b| b.version).collect::<Vec<_>>(),
        vec![1]
    );
    assert!(!path(&bad).exists());
    assert_eq!(
        c.download_bytes(&fs.url, 40, 2).await.unwrap_err().code,
        dfs_proto::ErrorCode::NotFound
    );
    // A blob whose file vanished while the server runs is forgotten at its first download.
    let read = c
        .upload_bytes(&fs.url, 40, 4, b"read".to_vec())
        .await
        .unwrap();
    std::fs::remove_file(path(&read)).unwrap();
    assert_eq!(
        c.download_bytes(&fs.url, 40, 4).await.unwrap_err().code,
        dfs_proto::ErrorCode::NotFound
    );
    assert!(c
        .list(&fs.url)
        .await
        .unwrap()
        .blobs
        .iter()
        .all(|b| b.version != 4));
    // Bad ids are a 400 like everywhere else.
    let http = dfs_proto::client::http_client();
    for bad_id in ["-1", "abc", "18446744073709551616"] {
        let reply = http
            .post(format!("{}/v1/blobs/{bad_id}/1/verify", fs.url))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 400, "{bad_id}");
    }
    fs.stop().await;
}
