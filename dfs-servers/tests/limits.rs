//! Limits that hold against a hostile client (issue 12, item 8): one test per attack, each
//! against real servers on 127.0.0.1:0 and, where the attack is about bytes on the wire, with
//! raw HTTP written to a TCP socket.

mod common;

use common::Ns;
use dfs_proto::client::{FileClient, LockClient};
use dfs_proto::files::BlobListQuery;
use dfs_proto::locks::{AcquireRequest, LeaseListQuery};
use dfs_proto::{Checksum, DfsPath, ErrorCode};
use dfs_servers::{fileserver, lockserver, nameserver};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Sends `head` (request line and headers, without the blank line), then `body` one byte
/// every `gap`; returns the whole answer (empty when the server closed without one) and
/// when its first byte came.
async fn raw(url: &str, head: &str, body: &[u8], gap: Duration) -> (String, Instant) {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{head}\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    let body = body.to_vec();
    let trickle = tokio::spawn(async move {
        for b in body {
            if write.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut at = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                if answer.is_empty() {
                    at = Instant::now();
                }
                answer.extend_from_slice(&buf[..n]);
            }
            Err(_) => panic!("no answer and no close within 20 s"),
        }
    }
    trickle.abort();
    (String::from_utf8_lossy(&answer).into_owned(), at)
}

fn p(s: &str) -> DfsPath {
    DfsPath::parse(s).unwrap()
}

/// A lockserver with `tweak` applied to its config, its URL and the sender that stops it.
async fn lockserver(tweak: impl FnOnce(&mut lockserver::Config)) -> (String, oneshot::Sender<()>) {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut config = lockserver::Config {
        insecure: true,
        data: dir,
        ..lockserver::Config::default()
    };
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(lockserver::run(listener, config, async move {
        let _ = rx.await;
    }));
    let client = LockClient::new(&url);
    common::eventually("lockserver up", async || client.healthz().await.is_ok()).await;
    (url, tx)
}

/// A stand-alone fileserver (no nameserver) with `tweak` applied.
async fn fileserver(
    data: &std::path::Path,
    tweak: impl FnOnce(&mut fileserver::Config),
) -> (String, oneshot::Sender<()>) {
    let mut config = fileserver::Config {
        insecure: true,
        data: data.to_owned(),
        nameserver: String::new(),
        ..fileserver::Config::default()
    };
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = fileserver::Fileserver::start(listener, config)
        .await
        .unwrap();
    let url = server.url().to_owned();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    (url, tx)
}

#[tokio::test]
async fn slow_body_to_the_nameserver_is_cut_off_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |c| c.body_deadline_ms = 500).await;
    let body = br#"{"path":"/slow","mode":420}"#;
    let head = format!(
        "POST /v1/meta/mkdir HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
        body.len()
    );
    let sent = Instant::now();
    // One byte every 100 ms: no gap is long, but the whole body would take 2.7 s.
    let (answer, at) = raw(&ns.url, &head, body, Duration::from_millis(100)).await;
    let took = at - sent;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"bad_request""#), "{answer}");
    assert!(answer.contains("not received within 500 ms"), "{answer}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2000),
        "answered after {took:?}"
    );
    // Nothing was created, and an honest client is served as before.
    let err = ns.client.stat(&p("/slow")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    ns.stop().await;
}

#[tokio::test]
async fn slow_body_to_the_lockserver_is_cut_off_at_its_deadline() {
    let (url, _stop) = lockserver(|c| c.body_deadline_ms = 300).await;
    let body = br#"{"paths":["/a"],"client":"slowpoke"}"#;
    let head = format!(
        "POST /v1/locks/acquire HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
        body.len()
    );
    let (answer, _) = raw(&url, &head, body, Duration::from_millis(100)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let list = LockClient::new(&url).list().await.unwrap();
    assert!(list.leases.is_empty(), "{list:?}");
}

#[tokio::test]
async fn huge_content_length_is_refused_before_the_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |_| {}).await;
    let (locks, _stop_locks) = lockserver(|_| {}).await;
    let (files, _stop_files) = fileserver(&dir.path().join("fs"), |c| {
        c.max_body_bytes = 1 << 20;
    })
    .await;
    let ten_gb = 10u64 << 30;
    let cases = [
        (ns.url.as_str(), "POST /v1/meta/mkdir"),
        (ns.url.as_str(), "POST /v1/meta/publish"),
        (locks.as_str(), "POST /v1/locks/acquire"),
        (files.as_str(), "POST /v1/blobs/1/1/fetch"),
        (files.as_str(), "PUT /v1/blobs/1/1"),
    ];
    for (url, line) in cases {
        let head = format!(
            "{line} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {ten_gb}"
        );
        // No body byte is ever sent: an answer at all proves the body was not waited for.
        let sent = Instant::now();
        let (answer, at) = raw(url, &head, b"", Duration::ZERO).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{line}: {answer}");
        assert!(
            answer.contains(r#""code":"payload_too_large""#),
            "{line}: {answer}"
        );
        assert!(
            at - sent < Duration::from_secs(2),
            "{line}: {:?}",
            at - sent
        );
    }
    let stored = FileClient::new().list(&files).await.unwrap();
    assert!(stored.blobs.is_empty());
    ns.stop().await;
}

#[tokio::test]
async fn trickled_upload_is_cut_off_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _stop) = fileserver(dir.path(), |c| {
        c.upload_grace_ms = 500;
        c.upload_min_bytes_per_sec = 1000;
    })
    .await;
    // 100 bytes announced, one byte every 50 ms (20 B/s): never a long gap, far too slow.
    let body = vec![7u8; 100];
    let head = format!(
        "PUT /v1/blobs/9/1 HTTP/1.1\r\nContent-Length: {}\r\nx-dfs-checksum: {}",
        body.len(),
        Checksum::of(&body)
    );
    let sent = Instant::now();
    let (answer, at) = raw(&files, &head, &body, Duration::from_millis(50)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("upload too slow"), "{answer}");
    let took = at - sent;
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
        "cut off after {took:?}"
    );
    let client = FileClient::new();
    assert!(client.list(&files).await.unwrap().blobs.is_empty());
    // An honest upload right after is stored.
    let info = client
        .upload_bytes(&files, 9, 1, body.clone())
        .await
        .unwrap();
    assert_eq!(info.size, 100);
}

#[tokio::test]
async fn too_many_leases_for_one_client_are_refused() {
    let (url, _stop) = lockserver(|c| c.max_leases_per_client = 3).await;
    let client = LockClient::new(&url);
    let acquire = |who: &str, path: &str| AcquireRequest {
        paths: vec![p(path)],
        client: who.into(),
        ttl_ms: None,
    };
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            client
                .acquire(&acquire("greedy", &format!("/f{i}")))
                .await
                .unwrap(),
        );
    }
    let err = client.acquire(&acquire("greedy", "/f3")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Busy, "{err}");
    assert!(err.message.contains("already holds 3 leases"), "{err}");
    // Another client is not affected; a release makes room again.
    client.acquire(&acquire("other", "/g")).await.unwrap();
    client.release(held[0].token, "greedy").await.unwrap();
    client.acquire(&acquire("greedy", "/f3")).await.unwrap();
}

#[tokio::test]
async fn a_lease_of_240_long_paths_is_refused_and_nothing_is_kept() {
    let (url, _stop) = lockserver(|_| {}).await;
    let client = LockClient::new(&url);
    // 15 components of 255 bytes: about 3.9 KB a path, the longest kind DFS allows.
    let long = |i: usize| {
        let mut path = String::new();
        for c in 0..15 {
            path.push('/');
            path.push_str(&format!("{i:04}{c:02}").repeat(43)[..255]);
        }
        p(&path)
    };
    let paths: Vec<DfsPath> = (0..240).map(long).collect();
    let err = client
        .acquire(&AcquireRequest {
            paths: paths.clone(),
            client: "hoarder".into(),
            ttl_ms: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{err}");
    // Few enough paths, but too many bytes, is refused too.
    let err = client
        .acquire(&AcquireRequest {
            paths: paths[..10].to_vec(),
            client: "hoarder".into(),
            ttl_ms: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{err}");
    assert!(err.message.contains("may total at most"), "{err}");
    assert!(client.list().await.unwrap().leases.is_empty());
    // Two long paths (a rename) are fine.
    client
        .acquire(&AcquireRequest {
            paths: paths[..2].to_vec(),
            client: "renamer".into(),
            ttl_ms: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn lease_listing_pages_are_bounded_and_the_client_follows_them() {
    let (url, _stop) = lockserver(|_| {}).await;
    let client = LockClient::new(&url);
    for i in 0..5 {
        client
            .acquire(&AcquireRequest {
                paths: vec![p(&format!("/l{i}"))],
                client: format!("c{i}"),
                ttl_ms: None,
            })
            .await
            .unwrap();
    }
    let first = client
        .list_page(&LeaseListQuery {
            after: None,
            limit: Some(2),
        })
        .await
        .unwrap();
    assert_eq!(first.leases.len(), 2);
    let after = first.next_after.expect("more pages");
    assert_eq!(after, first.leases[1].token);
    let second = client
        .list_page(&LeaseListQuery {
            after: Some(after),
            limit: Some(2),
        })
        .await
        .unwrap();
    assert!(second.leases.iter().all(|l| l.token > after));
    // A page never exceeds the server's cap, whatever is asked.
    let capped = client
        .list_page(&LeaseListQuery {
            after: None,
            limit: Some(u32::MAX),
        })
        .await
        .unwrap();
    assert_eq!(capped.leases.len(), 5);
    assert_eq!(capped.next_after, None);
    let all = client.list().await.unwrap();
    let tokens: Vec<u64> = all.leases.iter().map(|l| l.token).collect();
    assert_eq!(tokens.len(), 5);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn blob_listing_pages_are_bounded_and_the_client_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _stop) = fileserver(dir.path(), |_| {}).await;
    let client = FileClient::new();
    for (f, v) in [(1, 1), (1, 2), (2, 1), (3, 7), (10, 1)] {
        client
            .upload_bytes(&files, f, v, format!("{f}.{v}").into_bytes())
            .await
            .unwrap();
    }
    let page = client
        .list_page(
            &files,
            &BlobListQuery {
                limit: Some(2),
                ..BlobListQuery::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = page.blobs.iter().map(|b| (b.file_id, b.version)).collect();
    assert_eq!(keys, vec![(1, 1), (1, 2)]);
    let next = page.next_after.expect("more pages");
    let page = client
        .list_page(
            &files,
            &BlobListQuery {
                after_file_id: Some(next.file_id),
                after_version: Some(next.version),
                limit: Some(2),
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = page.blobs.iter().map(|b| (b.file_id, b.version)).collect();
    assert_eq!(keys, vec![(2, 1), (3, 7)]);
    let all = client.list(&files).await.unwrap();
    assert_eq!(all.blobs.len(), 5);
    assert_eq!(all.next_after, None);
    // Half a cursor is a JSON 400, not a 500.
    let reply = reqwest::get(format!("{files}/v1/blobs?after_file_id=1"))
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
}

#[test]
fn every_server_listens_on_localhost_by_default() {
    for listen in [
        nameserver::Config::default().listen,
        lockserver::Config::default().listen,
        fileserver::Config::default().listen,
    ] {
        assert!(listen.starts_with("127.0.0.1:"), "{listen}");
    }
}
