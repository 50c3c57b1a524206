//! Data safety against real in-process fileservers: a publish needs every wanted copy by
//! default and a dead target can be replaced (`exclude`); GC notices blobs a holder lost or
//! holds corrupt, and collects uploads that were never published; repair copies from any good
//! holder.

mod common;

use common::{eventually, live_fileservers, p, Ns};
use dfs_proto::client::{FileClient, NameClient};
use dfs_proto::names::*;
use dfs_proto::{version_for, Checksum, ErrorCode, FileId, Version};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn open_req(path: &str, token: u64, create: bool, exclude: &[&str]) -> OpenWriteRequest {
    OpenWriteRequest {
        path: p(path),
        token,
        create: create.then_some(0o644),
        exclusive: false,
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        owner: None,
        lease: None,
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
        lease: None,
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
/// live replacement, after which the publish with two copies succeeds. The excluded server,
/// which does not answer, is marked dead at once.
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

    // The excluded server does not answer either: it is marked dead at once (not after the
    // 60 s heartbeat timeout), so another writer is not sent to it.
    eventually("the excluded dead server is marked dead", async || {
        let info = c.cluster().await.unwrap();
        info.fileservers.iter().any(|f| f.id == dead.id && !f.alive)
    })
    .await;
    let other = c.open_write(&open_req("/g", 8, true, &[])).await.unwrap();
    assert_eq!(other.targets.len(), 2);
    assert!(other.targets.iter().all(|t| t.id != dead.id));

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
    assert!(none.targets.is_empty(), "{:?}", none.targets);
    // Servers that answer are not marked dead by being excluded (their probes are done well
    // within the probe timeout; a heartbeat would revive them only after a second).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let info = c.cluster().await.unwrap();
    assert_eq!(info.fileservers.iter().filter(|f| f.alive).count(), 2);
    for (_, stop, task) in servers {
        let _ = stop.send(());
        let _ = task.await;
    }
    ns.stop().await;
}

/// The file of blob (id, version) under a fileserver's data directory.
fn blob_file(data: &Path, id: FileId, version: Version) -> Option<PathBuf> {
    let prefix = format!("{id:016x}-{version:016x}-");
    for fan in std::fs::read_dir(data.join("blobs")).ok()? {
        let fan = fan.ok()?.path();
        for f in std::fs::read_dir(&fan).ok()? {
            let f = f.ok()?.path();
            if f.file_name()?.to_str()?.starts_with(&prefix) {
                return Some(f);
            }
        }
    }
    None
}

/// Whether `url` serves exactly `body` as (id, version).
async fn serves(url: &str, id: FileId, version: Version, body: &[u8]) -> bool {
    FileClient::new()
        .download_bytes(url, id, version)
        .await
        .is_ok_and(|got| got == body)
}

/// Item 6: a fileserver restarted on the same id after its blob vanished from disk stops
/// counting as a holder once GC verified it directly, and repair copies the file back to it.
#[tokio::test]
async fn a_holder_that_lost_its_blob_is_dropped_and_the_copy_restored() {
    lost_blob_is_restored(100).await;
}

/// The same with the periodic GC pass out of the way: the inventory taken when the fileserver
/// registers again finds the loss.
#[tokio::test]
async fn a_lost_blob_is_found_by_the_inventory_at_registration() {
    lost_blob_is_restored(600_000).await;
}

async fn lost_blob_is_restored(gc_interval_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |c| {
        c.heartbeat_interval_ms = 50;
        c.heartbeat_timeout_ms = 1_000;
        c.repair_interval_ms = 100;
        c.gc_interval_ms = gc_interval_ms;
    })
    .await;
    let c = ns.client.clone();
    let mut servers = live_fileservers(&ns, dir.path(), 2).await;
    let body = vec![7u8; 100_000];
    let e = write(&c, "/f", 3, &body).await;
    assert_eq!(e.servers.len(), 2);

    // Server 0 stops, loses the blob from its disk, and comes back with the same id.
    let (id0, stop, task) = servers.remove(0);
    let old_url = eventually_url(&c, &id0, "").await;
    stop.send(()).unwrap();
    task.await.unwrap();
    let data0 = dir.path().join("fs0");
    std::fs::remove_file(blob_file(&data0, e.id, e.version).unwrap()).unwrap();
    let (again, stop0, task0) = common::real_fileserver(&ns.url, &data0).await;
    assert_eq!(again, id0);

    let url0 = eventually_url(&c, &id0, &old_url).await;
    eventually("the lost copy is restored on its server", async || {
        let st = c.stat(&p("/f")).await.unwrap();
        st.servers.contains(&id0) && serves(&url0, e.id, e.version, &body).await
    })
    .await;
    let _ = stop0.send(());
    let _ = task0.await;
    for (_, stop, task) in servers {
        let _ = stop.send(());
        let _ = task.await;
    }
    ns.stop().await;
}

/// The URL the nameserver has for fileserver `id`, once it is alive at a URL other than `not`.
async fn eventually_url(c: &NameClient, id: &str, not: &str) -> String {
    let mut url = String::new();
    eventually("the fileserver is alive", async || {
        let info = c.cluster().await.unwrap();
        match info
            .fileservers
            .iter()
            .find(|f| f.id == id && f.alive && f.url != not)
        {
            Some(f) => {
                url = f.url.clone();
                true
            }
            None => false,
        }
    })
    .await;
    url
}

/// Item 9: an upload whose publish never came is deleted once GC saw it unpublished for
/// `orphan_after_ms`; until then it is kept (it may be a writer's upload in flight), and the
/// published version of another file is never touched.
#[tokio::test]
async fn uploads_never_published_are_collected_after_orphan_after() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |c| {
        c.gc_interval_ms = 100;
        c.orphan_after_ms = 3_000;
    })
    .await;
    let c = ns.client.clone();
    let servers = live_fileservers(&ns, dir.path(), 2).await;
    let files = FileClient::new();
    let kept = write(&c, "/kept", 1, b"published").await;

    let o = c.open_write(&open_req("/f", 5, true, &[])).await.unwrap();
    let version = version_for(5, 1);
    for t in &o.targets {
        files
            .upload_bytes(&t.url, o.entry.id, version, b"never published".to_vec())
            .await
            .unwrap();
    }
    // Several GC passes later it is still there...
    tokio::time::sleep(Duration::from_millis(600)).await;
    for t in &o.targets {
        assert!(serves(&t.url, o.entry.id, version, b"never published").await);
    }
    // ...and it goes once it stayed unpublished long enough.
    eventually("the unpublished uploads are deleted", async || {
        for t in &o.targets {
            let list = files.list(&t.url).await.unwrap();
            if list.blobs.iter().any(|b| b.file_id == o.entry.id) {
                return false;
            }
        }
        true
    })
    .await;
    for t in &o.targets {
        assert!(serves(&t.url, kept.id, kept.version, b"published").await);
    }
    assert_eq!(c.stat(&p("/kept")).await.unwrap().servers.len(), 2);
    for (_, stop, task) in servers {
        let _ = stop.send(());
        let _ = task.await;
    }
    ns.stop().await;
}

/// Item 11: the first holder's copy is corrupt on disk; repair must not be blocked by it: it
/// copies from the second holder to the spare, the corrupt holder stops counting (it removed
/// its bad copy when asked to verify it), and in the end all three hold a good copy.
#[tokio::test]
async fn repair_copies_from_a_good_holder_when_the_first_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |c| {
        c.repair_interval_ms = 100;
        c.gc_interval_ms = 600_000;
    })
    .await;
    let c = ns.client.clone();
    let servers = live_fileservers(&ns, dir.path(), 3).await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let e = write(&c, "/f", 4, &body).await;
    assert_eq!(e.servers.len(), 2);
    let first = e.servers[0].clone();
    let spare = servers
        .iter()
        .map(|s| s.0.clone())
        .find(|id| !e.servers.contains(id))
        .unwrap();
    let i = servers.iter().position(|s| s.0 == first).unwrap();
    let path = blob_file(&dir.path().join(format!("fs{i}")), e.id, e.version).unwrap();
    let mut bad = std::fs::read(&path).unwrap();
    bad[1000] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();

    // Three copies wanted now: repair must fill the spare from the good holder.
    c.set_dir_replication(&p("/"), Some(3)).await.unwrap();
    let spare_url = eventually_url(&c, &spare, "").await;
    let first_url = eventually_url(&c, &first, "").await;
    eventually("the spare got a good copy", async || {
        let st = c.stat(&p("/f")).await.unwrap();
        st.servers.contains(&spare) && serves(&spare_url, e.id, e.version, &body).await
    })
    .await;
    eventually("the corrupt holder is healed too", async || {
        let st = c.stat(&p("/f")).await.unwrap();
        st.servers.len() == 3 && serves(&first_url, e.id, e.version, &body).await
    })
    .await;
    for (_, stop, task) in servers {
        let _ = stop.send(());
        let _ = task.await;
    }
    ns.stop().await;
}
