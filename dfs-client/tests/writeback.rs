//! Writeback in the library (`ClientBuilder::writeback`) against a real in-process cluster:
//! close returns before the publish, the publishes land in close order, a client that dies
//! with closed files unpublished leaves them to the next client on its directory, and a file
//! changed by someone else meanwhile is a conflict that keeps the closed content.

use dfs_client::{blocking, Client};
use dfs_tests::cluster::Cluster;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A cluster whose leases expire quickly, so that leases of a client that died (kept until
/// they expire) hold the next one up for a few seconds, not ten.
fn cluster() -> Cluster {
    Cluster::start_tuned(
        2,
        |_| {},
        |locks| {
            locks.ttl_ms = 2_000;
            locks.lock_delay_ms = 100;
        },
    )
}

/// The records (`*.json`) and data files (`*.data`) waiting in a writeback directory.
fn waiting(dir: &Path) -> (usize, usize) {
    let mut counts = (0, 0);
    for entry in std::fs::read_dir(dir.join("pending")).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => counts.0 += 1,
            Some("data") => counts.1 += 1,
            _ => panic!("unexpected file {}", path.display()),
        }
    }
    counts
}

/// Writes `bytes` as the whole of `path` and closes it (with writeback: durable locally).
fn close_file(client: &blocking::Client, path: &str, bytes: &[u8]) {
    let mut file = client.create(path).unwrap();
    file.write_all(bytes).unwrap();
    file.close().unwrap();
}

/// The content of `path` as published now.
fn read_text(client: &blocking::Client, path: &str) -> String {
    let mut text = String::new();
    client
        .open(path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn writeback_client(cluster: &Cluster, dir: &Path) -> blocking::Client {
    blocking::Client::builder(&cluster.nameserver)
        .key(cluster.keys.client.clone())
        .writeback(dir)
        .build()
        .unwrap()
}

#[test]
fn closed_files_are_published_in_order_and_read_back_by_the_writer() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    cluster.block_on(async {
        let client = Client::builder(&cluster.nameserver)
            .key(cluster.keys.client.clone())
            .writeback(dir.path())
            .build();
        client.create_dir_all("/wb").await.unwrap();
        for i in 0..20 {
            let mut file = client.create(&format!("/wb/f{i}")).await.unwrap();
            file.write_all(format!("first {i}").as_bytes())
                .await
                .unwrap();
            file.close().await.unwrap();
        }
        // The same file again, then read back through the writer: each waits for the
        // publish before it, so the writer sees its own closes.
        client.write("/wb/f0", b"second 0").await.unwrap();
        assert_eq!(client.read("/wb/f0").await.unwrap(), b"second 0");
        let mut seen = Vec::new();
        client
            .wait_published_with_progress(|done, total| seen.push((done, total)))
            .await
            .unwrap();
        assert_eq!(seen.last(), Some(&(21, 21)), "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");

        let other = cluster.client_at(&cluster.nameserver);
        for i in 1..20 {
            let bytes = other.read(&format!("/wb/f{i}")).await.unwrap();
            assert_eq!(bytes, format!("first {i}").as_bytes());
        }
        assert_eq!(other.read("/wb/f0").await.unwrap(), b"second 0");
        assert_eq!(client.publish_pending().await.unwrap(), 0);
    });
    assert_eq!(
        waiting(dir.path()),
        (0, 0),
        "published files leave nothing behind"
    );
}

#[test]
fn files_closed_by_a_client_that_died_are_published_by_the_next() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let first = writeback_client(&cluster, dir.path());
    first.create_dir_all("/dead").unwrap();
    for i in 0..20 {
        close_file(
            &first,
            &format!("/dead/f{i}"),
            format!("closed {i}").as_bytes(),
        );
    }
    // Its runtime goes with it, mid-queue, as if the process were killed: nothing more is
    // published and its leases stay until they expire.
    drop(first);
    let (records, data) = waiting(dir.path());
    assert!(
        records >= 1,
        "close returned before the last file was published"
    );
    assert_eq!(records, data, "every record has its data");

    let second = writeback_client(&cluster, dir.path());
    assert_eq!(second.publish_pending().unwrap(), records);
    second.wait_published().unwrap();
    assert_eq!(waiting(dir.path()), (0, 0));
    let reader = cluster.blocking_client();
    for i in 0..20 {
        assert_eq!(
            read_text(&reader, &format!("/dead/f{i}")),
            format!("closed {i}")
        );
    }
}

#[test]
fn a_file_changed_meanwhile_is_a_conflict_that_keeps_the_closed_content() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let first = writeback_client(&cluster, dir.path());
    first.create_dir_all("/c").unwrap();
    // Several files first, so the last one is still queued when the client dies.
    for i in 0..10 {
        close_file(&first, &format!("/c/other{i}"), b"x");
    }
    close_file(&first, "/c/x", b"mine");
    drop(first);
    assert!(
        std::fs::read_dir(dir.path().join("pending"))
            .unwrap()
            .any(|e| std::fs::read(e.unwrap().path()).unwrap() == b"mine"),
        "the last close is still waiting"
    );

    // Someone else writes the file once the dead client's lease expired.
    let theirs = blocking::Client::builder(&cluster.nameserver)
        .key(cluster.keys.client.clone())
        .lock_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    close_file(&theirs, "/c/x", b"theirs");

    let second = writeback_client(&cluster, dir.path());
    assert!(second.publish_pending().unwrap() >= 1);
    let err = second.wait_published().unwrap_err();
    assert!(err.to_string().contains("/c/x"), "{err}");
    assert_eq!(
        read_text(&theirs, "/c/x"),
        "theirs",
        "a conflict overwrites nothing"
    );
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("pending"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        kept.iter().any(|p| std::fs::read(p).unwrap() == b"mine"),
        "the closed content is kept: {kept:?}"
    );
    assert!(
        kept.iter().any(|p| {
            p.extension().is_some_and(|e| e == "json")
                && String::from_utf8_lossy(&std::fs::read(p).unwrap()).contains("\"error\"")
        }),
        "its record says why: {kept:?}"
    );
    drop(second);
    // Not tried again at the next start: the user decides.
    let third = writeback_client(&cluster, dir.path());
    assert_eq!(third.publish_pending().unwrap(), 0);
    third.wait_published().unwrap();
}

#[test]
fn one_client_at_a_time_uses_a_writeback_directory() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let first = writeback_client(&cluster, dir.path());
    assert_eq!(first.publish_pending().unwrap(), 0);
    let second = writeback_client(&cluster, dir.path());
    let err = second.publish_pending().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceBusy, "{err}");
    assert!(
        second.create("/busy").is_err(),
        "no file is written around the lock"
    );
    drop(first);
    assert_eq!(
        second.publish_pending().unwrap(),
        0,
        "free once the first is gone"
    );
}
