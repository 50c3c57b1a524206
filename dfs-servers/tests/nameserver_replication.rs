//! Per-directory replication factor: `POST /v1/dirs/replication` against a nameserver with
//! three real in-process fileservers. The longest prefix with a factor wins; placement, repair,
//! the under-replicated listing, `GET /` and `/v1/cluster` all follow it.

mod common;

use common::{eventually, live_fileservers, p, Ns};
use dfs_proto::client::{FileClient, NameClient};
use dfs_proto::names::*;
use dfs_proto::{version_for, Checksum, ErrorCode};
use std::time::Duration;

/// Writes `body` to `path` the way a client does: open-write, upload to every target,
/// publish with the servers that acknowledged. Returns the targets.
async fn write(c: &NameClient, path: &str, token: u64, body: &[u8]) -> Vec<FileserverRef> {
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
    o.targets
}

async fn copies(c: &NameClient, path: &str) -> usize {
    c.stat(&p(path)).await.unwrap().servers.len()
}

fn under<'a>(info: &'a ClusterInfo, path: &str) -> Option<&'a UnderReplicated> {
    info.under_replicated
        .iter()
        .find(|u| u.path.as_str() == path)
}

#[tokio::test]
async fn per_directory_replication_with_real_fileservers() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |c| {
        c.heartbeat_interval_ms = 50;
        c.heartbeat_timeout_ms = 400;
        c.repair_interval_ms = 50;
        c.gc_interval_ms = 60_000;
        c.min_replicas = Some(2);
    })
    .await;
    let c = ns.client.clone();
    let mut servers = live_fileservers(&ns, dir.path(), 3).await;

    // Bad factors are refused and change nothing.
    for bad in [0, 65] {
        let err = c.set_dir_replication(&p("/three"), Some(bad)).await;
        assert_eq!(err.unwrap_err().code, ErrorCode::BadRequest);
    }
    assert!(c.cluster().await.unwrap().map.is_empty());

    let set = c.set_dir_replication(&p("/three"), Some(3)).await.unwrap();
    assert_eq!((set.dir.as_str(), set.replication), ("/three", Some(3)));
    assert!(set.servers.is_empty());
    c.set_dir_replication(&p("/one"), Some(1)).await.unwrap();
    c.set_dir_replication(&p("/three/low"), Some(1))
        .await
        .unwrap();
    for d in ["/three", "/three/sub", "/three/low", "/one", "/two"] {
        c.mkdir(&p(d), None).await.unwrap();
    }

    // Placement: as many targets as the longest prefix with a factor asks for. `/one` works
    // although `min_replicas` is 2: a directory's factor caps the minimum.
    let cases = [
        ("/three/a", 3),
        ("/three/sub/a", 3),
        ("/three/low/a", 1),
        ("/one/a", 1),
        ("/two/a", 2),
    ];
    let mut holders = Vec::new();
    for (i, (path, want)) in cases.iter().enumerate() {
        let targets = write(&c, path, 10 + i as u64, path.as_bytes()).await;
        assert_eq!(targets.len(), *want, "targets of {path}: {targets:?}");
        holders.push(targets);
    }

    // The map shows the factors; `/` got the default two servers at the first write.
    let info = c.cluster().await.unwrap();
    assert_eq!(info.replication, 2);
    let factor = |dir: &str| {
        info.map
            .iter()
            .find(|m| m.dir.as_str() == dir)
            .and_then(|m| m.replication)
    };
    assert_eq!(factor("/three"), Some(3));
    assert_eq!(factor("/three/low"), Some(1));
    assert_eq!(factor("/one"), Some(1));
    let root = info.map.iter().find(|m| m.dir.is_root()).unwrap();
    assert_eq!((root.servers.len(), root.replication), (2, None));
    assert!(info.under_replicated.is_empty(), "{info:?}");
    let text = reqwest::get(format!("{}/", ns.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("# replication /three 3\n"), "{text}");
    assert!(text.contains("# replication /one 1\n"), "{text}");

    // Repair never adds copies beyond a directory's factor.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (path, want) in cases {
        assert_eq!(copies(&c, path).await, want, "{path}");
    }

    // Raising a factor makes existing files under-replicated; repair fills them up.
    c.set_dir_replication(&p("/one"), Some(3)).await.unwrap();
    eventually("/one/a repaired to 3 copies", async || {
        copies(&c, "/one/a").await == 3
    })
    .await;
    let st = c.stat(&p("/one/a")).await.unwrap();
    let files = FileClient::new();
    for url in &st.locations {
        let got = files.download_bytes(url, st.id, st.version).await.unwrap();
        assert_eq!(got, b"/one/a");
    }

    // A dead fileserver: files wanting 3 copies are listed with their own factor; a
    // one-copy file whose holder lives is not; the two-copy file is repaired back to 2.
    let low_holder = holders[2][0].id.clone();
    let victim = servers
        .iter()
        .position(|(id, _, _)| *id != low_holder)
        .unwrap();
    let (victim_id, stop, task) = servers.remove(victim);
    let _ = stop.send(());
    task.await.unwrap();
    eventually("under-replicated listing", async || {
        let info = c.cluster().await.unwrap();
        under(&info, "/three/a").is_some() && under(&info, "/one/a").is_some()
    })
    .await;
    let info = c.cluster().await.unwrap();
    for path in ["/three/a", "/three/sub/a", "/one/a"] {
        let u = under(&info, path).unwrap_or_else(|| panic!("{path} not listed: {info:?}"));
        assert_eq!((u.live_copies, u.wanted), (2, 3), "{path}");
    }
    assert!(under(&info, "/three/low/a").is_none(), "{info:?}");
    eventually("/two/a back to 2 live copies", async || {
        let info = c.cluster().await.unwrap();
        under(&info, "/two/a").is_none()
    })
    .await;
    let st = c.stat(&p("/two/a")).await.unwrap();
    assert_eq!(st.locations.len(), 2, "{st:?} (dead: {victim_id})");
    let text = reqwest::get(format!("{}/", ns.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("# under-replicated /three/a 2/3\n"), "{text}");

    // Clearing the override: `/three` falls back to the default 2, so its files are whole;
    // `/three/low` keeps its own factor.
    let cleared = c.set_dir_replication(&p("/three"), None).await.unwrap();
    assert_eq!(cleared.replication, None);
    let info = c.cluster().await.unwrap();
    assert!(under(&info, "/three/a").is_none(), "{info:?}");
    assert!(!info.map.iter().any(|m| m.dir.as_str() == "/three"));
    assert!(info.map.iter().any(|m| m.dir.as_str() == "/three/low"));
    let targets = write(&c, "/three/b", 30, b"b").await;
    assert_eq!(targets.len(), 2);

    for (_, stop, task) in servers {
        let _ = stop.send(());
        task.await.unwrap();
    }
    ns.stop().await;
}

#[tokio::test]
async fn factors_survive_a_restart_and_an_old_map_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ns");
    let register = async |c: &NameClient| {
        for (i, id) in ["fa", "fb", "fc"].iter().enumerate() {
            c.register(&RegisterRequest {
                id: id.to_string(),
                url: format!("http://127.0.0.1:{}", 9 + i),
                capacity_bytes: 1 << 40,
                free_bytes: 1 << 30,
                dirs: if *id == "fc" { vec![p("/fc")] } else { vec![] },
                secret: None,
            })
            .await
            .unwrap();
        }
    };
    let ns = Ns::start(&data, |c| c.heartbeat_timeout_ms = 60_000).await;
    register(&ns.client).await;
    ns.client
        .set_dir_replication(&p("/big"), Some(3))
        .await
        .unwrap();
    // A factor on a directory some fileserver asked for keeps its server list.
    let fc = ns
        .client
        .set_dir_replication(&p("/fc"), Some(1))
        .await
        .unwrap();
    assert_eq!(fc.servers, vec!["fc".to_owned()]);
    ns.stop().await;

    // A store written before factors existed held a bare server list per directory.
    {
        let db = redb::Database::create(data.join("nameserver.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("dirmap");
            let mut t = txn.open_table(def).unwrap();
            t.insert("/legacy", br#"["fa","fb"]"#.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    let ns = Ns::start(&data, |c| c.heartbeat_timeout_ms = 60_000).await;
    register(&ns.client).await;
    let c = &ns.client;
    let info = c.cluster().await.unwrap();
    let get = |dir: &str| info.map.iter().find(|m| m.dir.as_str() == dir).unwrap();
    assert_eq!(get("/big").replication, Some(3));
    assert_eq!(
        (get("/fc").servers.clone(), get("/fc").replication),
        (vec!["fc".to_owned()], Some(1))
    );
    assert_eq!(
        (get("/legacy").servers.clone(), get("/legacy").replication),
        (vec!["fa".to_owned(), "fb".to_owned()], None)
    );
    for (d, want) in [("/big", 3), ("/fc", 1), ("/legacy", 2), ("/", 2)] {
        if d != "/" {
            c.mkdir(&p(d), None).await.unwrap();
        }
        let file = if d == "/" {
            "/f".to_owned()
        } else {
            format!("{d}/f")
        };
        let o = c
            .open_write(&OpenWriteRequest {
                path: p(&file),
                token: 1,
                create: Some(0o644),
                exclusive: false,
                exclude: Vec::new(),
                owner: None,
                lease: None,
            })
            .await
            .unwrap();
        assert_eq!(o.targets.len(), want, "{file}: {:?}", o.targets);
        if d == "/fc" {
            assert_eq!(o.targets[0].id, "fc");
        }
        if d == "/legacy" {
            let ids: Vec<&str> = o.targets.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, vec!["fa", "fb"]);
        }
    }
    ns.stop().await;
}
