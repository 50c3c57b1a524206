//! Replica integrity (issue 12, items 6 and 8): the nameserver's scrub finds a copy deleted or
//! overwritten on a fileserver's disk, stops counting it (the file shows under-replicated),
//! and repair restores it from the good copy; GC collects a blob stored at a future version
//! of an existing file that no publish ever reached.

mod common;

use common::{eventually, live_fileservers, p, Ns};
use dfs_proto::client::{FileClient, NameClient};
use dfs_proto::names::*;
use dfs_proto::{version_for, Checksum};
use std::path::{Path, PathBuf};

/// Writes `body` to `path` as a client does; returns the file id and the version.
async fn write(c: &NameClient, path: &str, token: u64, body: &[u8]) -> (u64, u64) {
    let files = FileClient::new();
    let o = c
        .open_write(&OpenWriteRequest {
            path: p(path),
            token,
            create: Some(0o644),
            exclusive: false,
            exclude: Vec::new(),
            owner: None,
            lease: None,
        })
        .await
        .unwrap();
    let version = version_for(token, 1);
    for t in &o.targets {
        files
            .upload_bytes(&t.url, o.entry.id, version, body.to_vec())
            .await
            .unwrap();
    }
    c.publish(&PublishRequest {
        path: p(path),
        file_id: o.entry.id,
        base_version: o.entry.version,
        version,
        token,
        size: body.len() as u64,
        checksum: Checksum::of(body),
        servers: o.targets.iter().map(|t| t.id.clone()).collect(),
        mtime_ns: None,
        lease: None,
    })
    .await
    .unwrap();
    (o.entry.id, version)
}

/// The file a fileserver with data in `data` keeps (file, version) in.
fn blob_file(data: &Path, file: u64, version: u64) -> PathBuf {
    let prefix = format!("{file:016x}-{version:016x}-");
    for fan in std::fs::read_dir(data.join("blobs")).unwrap() {
        for entry in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                return path;
            }
        }
    }
    panic!("no blob {file}/{version} under {}", data.display());
}

/// Every location of `path` serves exactly `body`, and there are `n` of them.
async fn served_everywhere(c: &NameClient, path: &str, body: &[u8], n: usize) -> bool {
    let entry = c.stat(&p(path)).await.unwrap();
    if entry.servers.len() != n || entry.locations.len() != n {
        return false;
    }
    for url in &entry.locations {
        match FileClient::new()
            .download_bytes(url, entry.id, entry.version)
            .await
        {
            Ok(got) if got == body => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn scrub_drops_a_deleted_or_overwritten_copy_and_repair_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |c| {
        c.replication = 2;
        c.scrub_interval_ms = 100;
        c.scrub_bytes_per_sec = 1 << 30;
        // Slow enough that the dropped holder is seen before the repair.
        c.repair_interval_ms = 1500;
        c.gc_interval_ms = 600_000;
    })
    .await;
    let c = ns.client.clone();
    let servers = live_fileservers(&ns, dir.path(), 2).await;
    let ids: Vec<String> = servers.iter().map(|s| s.0.clone()).collect();
    let data = |id: &str| {
        dir.path()
            .join(format!("fs{}", ids.iter().position(|i| i == id).unwrap()))
    };

    let gone = b"a copy whose file is deleted".to_vec();
    let forged = b"a copy whose bytes are overwritten".to_vec();
    let (gone_id, gone_v) = write(&c, "/gone", 1, &gone).await;
    let (forged_id, forged_v) = write(&c, "/forged", 2, &forged).await;
    let holders = c.stat(&p("/gone")).await.unwrap().servers;
    assert_eq!(holders.len(), 2);

    // One server loses /gone's file; the other gets /forged overwritten (same length).
    std::fs::remove_file(blob_file(&data(&holders[0]), gone_id, gone_v)).unwrap();
    let mut bad = forged.clone();
    bad[0] ^= 0xff;
    std::fs::write(blob_file(&data(&holders[1]), forged_id, forged_v), &bad).unwrap();

    eventually("both bad copies dropped as holders", async || {
        let info = c.cluster().await.unwrap();
        let under: Vec<&str> = info
            .under_replicated
            .iter()
            .map(|u| u.path.as_str())
            .collect();
        under.contains(&"/gone")
            && under.contains(&"/forged")
            && info.under_replicated_count == under.len() as u64
    })
    .await;
    let gone_now = c.stat(&p("/gone")).await.unwrap().servers;
    assert_eq!(gone_now, vec![holders[1].clone()], "the good holder stays");

    eventually("both files repaired", async || {
        served_everywhere(&c, "/gone", &gone, 2).await
            && served_everywhere(&c, "/forged", &forged, 2).await
    })
    .await;
    assert!(c.cluster().await.unwrap().under_replicated.is_empty());
    ns.stop().await;
}

#[tokio::test]
async fn a_blob_at_a_future_version_of_an_existing_file_is_collected() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |c| {
        c.replication = 1;
        c.gc_interval_ms = 100;
        c.orphan_after_ms = 500;
    })
    .await;
    let c = ns.client.clone();
    let servers = live_fileservers(&ns, dir.path(), 1).await;
    let _ = &servers;
    let (id, version) = write(&c, "/kept", 1, b"published").await;
    let url = c.stat(&p("/kept")).await.unwrap().locations[0].clone();
    let files = FileClient::new();
    // Versions no publish reached: one just ahead, one far in the future.
    for future in [version + 1, version_for(u64::MAX / 4, 9)] {
        files
            .upload_bytes(&url, id, future, vec![0u8; 4096])
            .await
            .unwrap();
    }
    assert_eq!(files.list(&url).await.unwrap().blobs.len(), 3);
    let started = std::time::Instant::now();
    eventually("future versions collected", async || {
        let blobs = files.list(&url).await.unwrap().blobs;
        blobs.len() == 1 && blobs[0].version == version
    })
    .await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(450),
        "collected before orphan_after_ms"
    );
    // The published version is untouched.
    assert_eq!(
        files.download_bytes(&url, id, version).await.unwrap(),
        b"published"
    );
    ns.stop().await;
}
