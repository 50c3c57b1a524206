//! Nameserver tests: a real server in-process on 127.0.0.1:0 with a temp data directory,
//! driven over HTTP through `NameClient` (and raw requests for the bad-input corpus).

mod common;

use axum::extract::{Path as AxPath, State as AxState};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{eventually, live_fileservers, p, Ns};
use dfs_proto::client::NameClient;
use dfs_proto::files::{BlobInfo, BlobList, FetchRequest};
use dfs_proto::names::*;
use dfs_proto::{version_for, ApiError, Checksum, ErrorCode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn code<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ErrorCode {
    r.expect_err("expected an error").code
}

async fn register(c: &NameClient, id: &str, url: &str, free: u64, dirs: &[&str]) {
    c.register(&RegisterRequest {
        id: id.into(),
        url: url.into(),
        capacity_bytes: 1 << 40,
        free_bytes: free,
        dirs: dirs.iter().map(|d| p(d)).collect(),
        secret: None,
    })
    .await
    .unwrap();
}

fn ow(path: &str, token: u64, create: bool) -> OpenWriteRequest {
    OpenWriteRequest {
        path: p(path),
        token,
        create: create.then_some(0o644),
        exclusive: false,
        exclude: Vec::new(),
        owner: None,
        lease: None,
    }
}

fn pubreq(e: &Entry, token: u64, seq: u64, content: &[u8], servers: &[&str]) -> PublishRequest {
    PublishRequest {
        path: e.path.clone(),
        file_id: e.id,
        base_version: e.version,
        version: version_for(token, seq),
        token,
        size: content.len() as u64,
        checksum: Checksum::of(content),
        servers: servers.iter().map(|s| s.to_string()).collect(),
        mtime_ns: None,
        lease: None,
    }
}

#[tokio::test]
async fn namespace_ops_and_posix_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;

    let root = c.stat(&p("/")).await.unwrap();
    assert_eq!((root.id, root.kind, root.mode), (1, EntryKind::Dir, 0o755));

    let a = c.mkdir(&p("/a"), None).await.unwrap();
    assert_eq!((a.kind, a.mode), (EntryKind::Dir, 0o755));
    assert_eq!(
        code(c.mkdir(&p("/a"), None).await),
        ErrorCode::AlreadyExists
    );
    assert_eq!(code(c.mkdir(&p("/"), None).await), ErrorCode::AlreadyExists);
    assert_eq!(code(c.mkdir(&p("/x/y"), None).await), ErrorCode::NotFound);

    let f = c
        .create(&CreateRequest {
            path: p("/a/f"),
            mode: Some(0o600),
            exclusive: true,
            owner: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (f.kind, f.size, f.version, f.mode),
        (EntryKind::File, 0, 0, 0o600)
    );
    assert_eq!(f.checksum.to_string(), "00000000");
    let again = c
        .create(&CreateRequest {
            path: p("/a/f"),
            mode: None,
            exclusive: false,
            owner: None,
        })
        .await
        .unwrap();
    assert_eq!(again.id, f.id);
    let excl = CreateRequest {
        path: p("/a/f"),
        mode: None,
        exclusive: true,
        owner: None,
    };
    assert_eq!(code(c.create(&excl).await), ErrorCode::AlreadyExists);
    let on_dir = CreateRequest {
        path: p("/a"),
        mode: None,
        exclusive: false,
        owner: None,
    };
    assert_eq!(code(c.create(&on_dir).await), ErrorCode::IsDirectory);

    // A file as a parent.
    assert_eq!(
        code(c.mkdir(&p("/a/f/g"), None).await),
        ErrorCode::NotDirectory
    );
    assert_eq!(code(c.stat(&p("/a/f/g")).await), ErrorCode::NotDirectory);
    assert_eq!(code(c.stat(&p("/a/nope")).await), ErrorCode::NotFound);
    assert_eq!(code(c.list(&p("/a/f")).await), ErrorCode::NotDirectory);

    // rmdir / unlink.
    assert_eq!(code(c.rmdir(&p("/a")).await), ErrorCode::NotEmpty);
    assert_eq!(code(c.rmdir(&p("/a/f")).await), ErrorCode::NotDirectory);
    assert_eq!(code(c.unlink(&p("/a")).await), ErrorCode::IsDirectory);
    assert_eq!(code(c.unlink(&p("/a/nope")).await), ErrorCode::NotFound);
    assert_eq!(code(c.rmdir(&p("/nope")).await), ErrorCode::NotFound);
    assert!(c.rmdir(&p("/")).await.is_err());

    // Directory mtime moves when entries come and go.
    let before = c.stat(&p("/a")).await.unwrap().mtime_ns;
    tokio::time::sleep(Duration::from_millis(2)).await;
    c.unlink(&p("/a/f")).await.unwrap();
    let after = c.stat(&p("/a")).await.unwrap().mtime_ns;
    assert!(after > before, "{after} > {before}");
    assert_eq!(code(c.stat(&p("/a/f")).await), ErrorCode::NotFound);
    c.rmdir(&p("/a")).await.unwrap();
    assert!(c.list(&p("/")).await.unwrap().is_empty());

    // setattr: mode and mtime only.
    let g = c
        .create(&CreateRequest {
            path: p("/g"),
            mode: None,
            exclusive: false,
            owner: None,
        })
        .await
        .unwrap();
    let g2 = c
        .setattr(&SetAttrRequest {
            path: p("/g"),
            mode: Some(0o100755),
            mtime_ns: Some(42),
            atime_ns: None,
            uid: None,
            gid: None,
            kill_suid: false,
            access: false,
        })
        .await
        .unwrap();
    assert_eq!((g2.id, g2.mode, g2.mtime_ns, g2.size), (g.id, 0o755, 42, 0));
    let g3 = c
        .setattr(&SetAttrRequest {
            path: p("/g"),
            mode: None,
            mtime_ns: Some(7),
            atime_ns: None,
            uid: None,
            gid: None,
            kill_suid: false,
            access: false,
        })
        .await
        .unwrap();
    assert_eq!((g3.mode, g3.mtime_ns), (0o755, 7));
    assert_eq!(
        code(
            c.setattr(&SetAttrRequest {
                path: p("/zz"),
                mode: Some(1),
                mtime_ns: None,
                atime_ns: None,
                uid: None,
                gid: None,
                kill_suid: false,
                access: false,
            })
            .await
        ),
        ErrorCode::NotFound
    );
    ns.stop().await;
}

async fn mkfile(c: &NameClient, path: &str) -> Entry {
    c.create(&CreateRequest {
        path: p(path),
        mode: None,
        exclusive: true,
        owner: None,
    })
    .await
    .unwrap()
}

fn rn(from: &str, to: &str) -> RenameRequest {
    RenameRequest {
        from: p(from),
        to: p(to),
        no_replace: false,
        exchange: false,
    }
}

#[tokio::test]
async fn rename_files_and_trees() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    c.mkdir(&p("/d"), None).await.unwrap();
    c.mkdir(&p("/d/sub"), None).await.unwrap();
    let deep = mkfile(c, "/d/sub/deep").await;
    let f1 = mkfile(c, "/f1").await;
    let f2 = mkfile(c, "/f2").await;

    // File over file replaces it.
    let moved = c.rename(&rn("/f1", "/f2")).await.unwrap();
    assert_eq!((moved.id, moved.path.as_str()), (f1.id, "/f2"));
    assert_eq!(c.stat(&p("/f2")).await.unwrap().id, f1.id);
    assert_ne!(c.stat(&p("/f2")).await.unwrap().id, f2.id);
    assert_eq!(code(c.stat(&p("/f1")).await), ErrorCode::NotFound);

    // A whole tree moves at once.
    c.rename(&rn("/d", "/e")).await.unwrap();
    assert_eq!(c.stat(&p("/e/sub/deep")).await.unwrap().id, deep.id);
    assert_eq!(code(c.stat(&p("/d/sub/deep")).await), ErrorCode::NotFound);
    let names: Vec<String> = c
        .list(&p("/e/sub"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    assert_eq!(names, vec!["/e/sub/deep"]);

    // Refusals.
    c.mkdir(&p("/empty"), None).await.unwrap();
    assert_eq!(
        code(c.rename(&rn("/e", "/f2")).await),
        ErrorCode::NotDirectory
    );
    assert_eq!(
        code(c.rename(&rn("/f2", "/empty")).await),
        ErrorCode::IsDirectory
    );
    c.mkdir(&p("/full"), None).await.unwrap();
    mkfile(c, "/full/x").await;
    assert_eq!(
        code(c.rename(&rn("/e", "/full")).await),
        ErrorCode::NotEmpty
    );
    assert_eq!(
        code(c.rename(&rn("/e", "/e/sub/in")).await),
        ErrorCode::InvalidMove
    );
    assert_eq!(code(c.rename(&rn("/", "/x")).await), ErrorCode::InvalidMove);
    assert_eq!(
        code(c.rename(&rn("/nope", "/x")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(c.rename(&rn("/f2", "/nope/x")).await),
        ErrorCode::NotFound
    );
    let mut nr = rn("/f2", "/full/x");
    nr.no_replace = true;
    assert_eq!(code(c.rename(&nr).await), ErrorCode::AlreadyExists);
    // Nothing moved by a refusal.
    assert_eq!(c.stat(&p("/f2")).await.unwrap().id, f1.id);
    assert_eq!(c.stat(&p("/e/sub/deep")).await.unwrap().id, deep.id);

    // Dir over an empty dir replaces it; onto itself is a no-op.
    c.rename(&rn("/e", "/empty")).await.unwrap();
    assert_eq!(c.stat(&p("/empty/sub/deep")).await.unwrap().id, deep.id);
    let same = c.rename(&rn("/f2", "/f2")).await.unwrap();
    assert_eq!(same.id, f1.id);
    // Into another directory.
    c.rename(&rn("/f2", "/empty/sub/moved")).await.unwrap();
    assert_eq!(c.stat(&p("/empty/sub/moved")).await.unwrap().id, f1.id);
    ns.stop().await;
}

#[tokio::test]
async fn listing_is_paginated_and_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    c.mkdir(&p("/big"), None).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..1005u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.create(&CreateRequest {
                path: p(&format!("/big/n{i:05}")),
                mode: None,
                exclusive: true,
                owner: None,
            })
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Default (and maximum) page is 1000.
    let page = c
        .list_page(&ListQuery {
            path: p("/big"),
            after: None,
            limit: Some(5000),
        })
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1000);
    assert_eq!(page.next_after.as_deref(), Some("n00999"));
    let all = c.list(&p("/big")).await.unwrap();
    assert_eq!(all.len(), 1005);
    let names: Vec<&str> = all.iter().map(|e| e.path.name()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    // Small pages.
    let mut after = None;
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let page = c
            .list_page(&ListQuery {
                path: p("/big"),
                after: after.clone(),
                limit: Some(400),
            })
            .await
            .unwrap();
        seen += page.entries.len();
        pages += 1;
        match page.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!((seen, pages), (1005, 3));
    ns.stop().await;
}

#[tokio::test]
async fn open_write_and_publish_fencing_and_idempotence() {
    let dir = tempfile::tempdir().unwrap();
    // Publishes below name single servers: the operator's explicit choice of one copy.
    let ns = Ns::start(dir.path(), |c| {
        c.lockserver = Some("http://locks:7001".into());
        c.min_replicas = Some(1);
    })
    .await;
    let c = &ns.client;
    register(c, "fa", "http://127.0.0.1:1", 100, &[]).await;
    register(c, "fb", "http://127.0.0.1:2", 200, &[]).await;

    let opened = c.open_write(&ow("/f", 5, true)).await.unwrap();
    assert_eq!(opened.entry.version, 0);
    let mut ids: Vec<_> = opened.targets.iter().map(|t| t.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["fa", "fb"]);
    // Missing without create.
    assert_eq!(
        code(c.open_write(&ow("/g", 5, false)).await),
        ErrorCode::NotFound
    );
    // Exclusive on an existing file.
    let mut excl = ow("/f", 5, true);
    excl.exclusive = true;
    assert_eq!(code(c.open_write(&excl).await), ErrorCode::AlreadyExists);
    c.mkdir(&p("/dir"), None).await.unwrap();
    assert_eq!(
        code(c.open_write(&ow("/dir", 5, false)).await),
        ErrorCode::IsDirectory
    );

    let req = pubreq(&opened.entry, 5, 1, b"abc", &["fa", "fb"]);
    let e = c.publish(&req).await.unwrap();
    assert_eq!((e.size, e.version), (3, version_for(5, 1)));
    assert_eq!(e.checksum, Checksum::of(b"abc"));
    assert_eq!(e.locations.len(), 2);
    // Lost reply: the retry succeeds and leaves exactly that version.
    let again = c.publish(&req).await.unwrap();
    assert_eq!(again.version, e.version);
    let st = c.stat(&p("/f")).await.unwrap();
    assert_eq!((st.version, st.size), (e.version, 3));
    assert_eq!(
        st.locations,
        vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]
    );

    // Stale base.
    let mut stale = pubreq(&opened.entry, 5, 2, b"zz", &["fa"]);
    stale.base_version = 0;
    assert_eq!(code(c.publish(&stale).await), ErrorCode::Stale);

    // A newer writer fences the older one at open and at publish.
    let newer = c.open_write(&ow("/f", 9, false)).await.unwrap();
    assert_eq!(newer.entry.version, e.version);
    assert_eq!(
        code(c.open_write(&ow("/f", 5, false)).await),
        ErrorCode::Fenced
    );
    let old_writer = pubreq(&st, 5, 2, b"old", &["fa"]);
    assert_eq!(code(c.publish(&old_writer).await), ErrorCode::Fenced);
    let e2 = c
        .publish(&pubreq(&newer.entry, 9, 1, b"newer", &["fb"]))
        .await
        .unwrap();
    assert_eq!(
        (e2.version, e2.size, e2.servers.clone()),
        (version_for(9, 1), 5, vec!["fb".to_string()])
    );
    // The retry of the first publish is now refused (a newer writer published after it).
    assert_eq!(code(c.publish(&req).await), ErrorCode::Fenced);

    // Bad publishes change nothing.
    let mut no_servers = pubreq(&e2, 9, 2, b"data", &[]);
    assert_eq!(code(c.publish(&no_servers).await), ErrorCode::BadRequest);
    no_servers.servers = vec!["ghost".into()];
    assert_eq!(code(c.publish(&no_servers).await), ErrorCode::BadRequest);
    // Empty content needs no server.
    let empty = c.publish(&pubreq(&e2, 9, 2, b"", &[])).await.unwrap();
    assert_eq!((empty.size, empty.version), (0, version_for(9, 2)));

    // A publish follows its file id, not the path: a file that no longer exists is
    // `not_found` (the writer's close reports ESTALE); a renamed one is published under its
    // new name.
    let mut wrong_id = pubreq(&empty, 9, 3, b"x", &["fa"]);
    wrong_id.file_id += 1000;
    assert_eq!(code(c.publish(&wrong_id).await), ErrorCode::NotFound);
    c.rename(&RenameRequest {
        from: p("/f"),
        to: p("/f2"),
        no_replace: false,
        exchange: false,
    })
    .await
    .unwrap();
    let moved = c
        .publish(&pubreq(&empty, 9, 3, b"x", &["fa"]))
        .await
        .unwrap();
    assert_eq!((moved.path.to_string(), moved.size), ("/f2".to_string(), 1));
    c.unlink(&p("/f2")).await.unwrap();
    assert_eq!(
        code(c.publish(&pubreq(&moved, 9, 4, b"y", &["fa"])).await),
        ErrorCode::NotFound
    );

    let info = c.cluster().await.unwrap();
    assert_eq!(info.lockserver.as_deref(), Some("http://locks:7001"));
    ns.stop().await;
}

#[tokio::test]
async fn min_replicas_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |c| c.min_replicas = Some(2)).await;
    let c = &ns.client;
    register(c, "fa", "http://127.0.0.1:1", 100, &[]).await;
    register(c, "fb", "http://127.0.0.1:2", 100, &[]).await;
    let o = c.open_write(&ow("/f", 1, true)).await.unwrap();
    let one = pubreq(&o.entry, 1, 1, b"abc", &["fa"]);
    assert_eq!(code(c.publish(&one).await), ErrorCode::Unavailable);
    assert_eq!(c.stat(&p("/f")).await.unwrap().version, 0);
    let two = pubreq(&o.entry, 1, 1, b"abc", &["fa", "fb"]);
    c.publish(&two).await.unwrap();
    ns.stop().await;
}

#[tokio::test]
async fn restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |c| c.min_replicas = Some(1)).await;
    let c = ns.client.clone();
    c.mkdir(&p("/keep"), Some(0o700)).await.unwrap();
    register(&c, "fa", "http://127.0.0.1:1", 100, &["/keep"]).await;
    let o = c.open_write(&ow("/keep/f", 7, true)).await.unwrap();
    let e = c
        .publish(&pubreq(&o.entry, 7, 1, b"hello", &["fa"]))
        .await
        .unwrap();
    let first_url = ns.url.clone();
    ns.stop().await;
    assert!(NameClient::new(&first_url).healthz().await.is_err());

    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    let st = c.stat(&p("/keep/f")).await.unwrap();
    assert_eq!(
        (st.id, st.version, st.size, st.checksum),
        (e.id, e.version, 5, e.checksum)
    );
    assert_eq!(c.stat(&p("/keep")).await.unwrap().mode, 0o700);
    // The token survived: a lower one is fenced.
    assert_eq!(
        code(c.open_write(&ow("/keep/f", 6, false)).await),
        ErrorCode::Fenced
    );
    // The fileserver is still known, and so is the map.
    let hb = c
        .heartbeat(&HeartbeatRequest {
            id: "fa".into(),
            free_bytes: 1,
            secret: None,
        })
        .await
        .unwrap();
    assert!(hb.known);
    let info = c.cluster().await.unwrap();
    assert!(info
        .map
        .iter()
        .any(|m| m.dir.as_str() == "/keep" && m.servers == vec!["fa"]));
    // Ids are never reused.
    let n = mkfile(c, "/new").await;
    assert!(n.id > e.id);
    ns.stop().await;
}

#[tokio::test]
async fn register_heartbeat_and_liveness() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |c| {
        c.heartbeat_interval_ms = 50;
        c.heartbeat_timeout_ms = 300;
        c.lockserver = Some("http://l:1".into());
    })
    .await;
    let c = &ns.client;
    let hb = HeartbeatRequest {
        id: "fa".into(),
        free_bytes: 5,
        secret: None,
    };
    assert!(!c.heartbeat(&hb).await.unwrap().known);
    let reply = c
        .register(&RegisterRequest {
            id: "fa".into(),
            url: "http://127.0.0.1:1".into(),
            capacity_bytes: 10,
            free_bytes: 5,
            dirs: vec![],
            secret: None,
        })
        .await
        .unwrap();
    assert_eq!(reply.heartbeat_interval_ms, 50);
    assert_eq!(reply.lockserver.as_deref(), Some("http://l:1"));
    assert!(c.heartbeat(&hb).await.unwrap().known);
    let alive = |info: &ClusterInfo| {
        info.fileservers
            .iter()
            .find(|f| f.id == "fa")
            .unwrap()
            .alive
    };
    assert!(alive(&c.cluster().await.unwrap()));
    // Silence: dead after the timeout.
    let mut dead = false;
    for _ in 0..300 {
        if !alive(&c.cluster().await.unwrap()) {
            dead = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dead, "fileserver never marked dead");
    assert!(c.heartbeat(&hb).await.unwrap().known);
    assert!(alive(&c.cluster().await.unwrap()));
    // URL changes are taken.
    register(c, "fa", "http://127.0.0.1:9/", 5, &[]).await;
    let info = c.cluster().await.unwrap();
    assert_eq!(info.fileservers[0].url, "http://127.0.0.1:9");
    ns.stop().await;
}

#[tokio::test]
async fn placement_by_prefix_free_space_and_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |c| {
        c.heartbeat_interval_ms = 50;
        c.heartbeat_timeout_ms = 400;
    })
    .await;
    let c = ns.client.clone();
    // Keep fa, fb, fc, fs alive from a background loop, except the ids in `silent`.
    let silent = Arc::new(Mutex::new(Vec::<String>::new()));
    register(&c, "fa", "http://127.0.0.1:1", 300, &[]).await;
    register(&c, "fb", "http://127.0.0.1:2", 200, &[]).await;
    register(&c, "fc", "http://127.0.0.1:3", 100, &[]).await;
    register(&c, "fs", "http://127.0.0.1:4", 1, &["/special"]).await;
    let beat = {
        let (c, silent) = (c.clone(), silent.clone());
        tokio::spawn(async move {
            loop {
                for id in ["fa", "fb", "fc", "fs"] {
                    if !silent.lock().unwrap().iter().any(|s| s == id) {
                        let _ = c
                            .heartbeat(&HeartbeatRequest {
                                id: id.into(),
                                free_bytes: match id {
                                    "fa" => 300,
                                    "fb" => 200,
                                    "fc" => 100,
                                    _ => 1,
                                },
                                secret: None,
                            })
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let ids = |o: &OpenWriteResponse| o.targets.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    // First write maps / to the two emptiest servers.
    let o = c.open_write(&ow("/x", 1, true)).await.unwrap();
    assert_eq!(ids(&o), vec!["fa", "fb"]);
    // A directory named by a fileserver goes there (topped up to the replication factor).
    c.mkdir(&p("/special"), None).await.unwrap();
    c.mkdir(&p("/special/deeper"), None).await.unwrap();
    let o = c
        .open_write(&ow("/special/deeper/y", 1, true))
        .await
        .unwrap();
    assert_eq!(ids(&o), vec!["fs", "fa"]);
    let text = reqwest::get(format!("{}/", ns.url)).await.unwrap();
    assert!(text.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = text.text().await.unwrap();
    assert!(text.contains("/=http://127.0.0.1:1\n"), "{text}");
    assert!(text.contains("/=http://127.0.0.1:2\n"), "{text}");
    assert!(text.contains("/special=http://127.0.0.1:4\n"), "{text}");
    // A dead member is replaced by a live non-member.
    silent.lock().unwrap().push("fa".into());
    let mut replaced = false;
    for _ in 0..200 {
        let o = c.open_write(&ow("/x", 1, false)).await.unwrap();
        if ids(&o) == vec!["fb", "fc"] {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(replaced);
    // The map itself keeps fa: it may come back.
    let info = c.cluster().await.unwrap();
    let root = info.map.iter().find(|m| m.dir.is_root()).unwrap();
    assert_eq!(root.servers, vec!["fa", "fb"]);
    beat.abort();
    ns.stop().await;
}

/// (file id, version) -> bytes.
type Blobs = BTreeMap<(u64, u64), Vec<u8>>;

/// A stand-in fileserver keeping blobs in memory: list, get, delete, fetch.
#[derive(Clone, Default)]
struct Stub {
    blobs: Arc<Mutex<Blobs>>,
}

impl Stub {
    async fn start(&self) -> String {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/v1/blobs",
                get(|AxState(s): AxState<Stub>| async move {
                    let blobs = s
                        .blobs
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|((f, v), b)| BlobInfo {
                            file_id: *f,
                            version: *v,
                            size: b.len() as u64,
                            checksum: Checksum::of(b),
                        })
                        .collect();
                    Json(BlobList {
                        blobs,
                        next_after: None,
                    })
                }),
            )
            .route(
                "/v1/blobs/{f}/{v}",
                get(
                    |AxState(s): AxState<Stub>, AxPath((f, v)): AxPath<(u64, u64)>| async move {
                        s.blobs
                            .lock()
                            .unwrap()
                            .get(&(f, v))
                            .cloned()
                            .unwrap_or_default()
                    },
                )
                .delete(
                    |AxState(s): AxState<Stub>, AxPath((f, v)): AxPath<(u64, u64)>| async move {
                        s.blobs.lock().unwrap().remove(&(f, v));
                        Json(serde_json::json!({}))
                    },
                ),
            )
            .route(
                "/v1/blobs/{f}/{v}/fetch",
                post(
                    |AxState(s): AxState<Stub>,
                     AxPath((f, v)): AxPath<(u64, u64)>,
                     Json(req): Json<FetchRequest>| async move {
                        let url = format!("{}/v1/blobs/{f}/{v}", req.source);
                        let bytes = reqwest::get(url)
                            .await
                            .unwrap()
                            .bytes()
                            .await
                            .unwrap()
                            .to_vec();
                        assert_eq!(Checksum::of(&bytes), req.checksum);
                        let info = BlobInfo {
                            file_id: f,
                            version: v,
                            size: bytes.len() as u64,
                            checksum: Checksum::of(&bytes),
                        };
                        s.blobs.lock().unwrap().insert((f, v), bytes);
                        Json(info)
                    },
                ),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn keys(&self) -> Vec<(u64, u64)> {
        self.blobs.lock().unwrap().keys().cloned().collect()
    }
}

#[tokio::test]
async fn repair_restores_replication_and_gc_deletes_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |c| {
        c.heartbeat_interval_ms = 50;
        c.heartbeat_timeout_ms = 400;
        c.repair_interval_ms = 50;
        c.gc_interval_ms = 50;
    })
    .await;
    let c = ns.client.clone();
    let stubs = [Stub::default(), Stub::default(), Stub::default()];
    let names = ["fa", "fb", "fc"];
    let mut urls = Vec::new();
    for (i, s) in stubs.iter().enumerate() {
        let url = s.start().await;
        register(&c, names[i], &url, 300 - i as u64 * 100, &[]).await;
        urls.push(url);
    }
    let silent = Arc::new(Mutex::new(vec!["fb".to_string(), "fc".to_string()]));
    let beat = {
        let (c, silent) = (c.clone(), silent.clone());
        tokio::spawn(async move {
            loop {
                for id in ["fa", "fb", "fc"] {
                    if !silent.lock().unwrap().iter().any(|s| s == id) {
                        let _ = c
                            .heartbeat(&HeartbeatRequest {
                                id: id.into(),
                                free_bytes: 100,
                                secret: None,
                            })
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let o = c.open_write(&ow("/r", 3, true)).await.unwrap();
    let content = b"replicate me".to_vec();
    let v1 = version_for(3, 1);
    stubs[0]
        .blobs
        .lock()
        .unwrap()
        .insert((o.entry.id, v1), content.clone());
    stubs[1]
        .blobs
        .lock()
        .unwrap()
        .insert((o.entry.id, v1), content.clone());
    c.publish(&pubreq(&o.entry, 3, 1, &content, &["fa", "fb"]))
        .await
        .unwrap();

    // fb and fc go silent: only fa holds the file, and nowhere to copy it.
    eventually("under-replication to show", async || {
        let text = reqwest::get(format!("{}/", ns.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("# under-replicated /r 1/2")
    })
    .await;
    let info = c.cluster().await.unwrap();
    assert_eq!(info.under_replicated.len(), 1);
    assert_eq!(info.under_replicated[0].live_copies, 1);

    // fc comes back: the file is copied there and fc recorded as a holder.
    silent.lock().unwrap().retain(|s| s != "fc");
    eventually("repair to fc", async || {
        let st = c.stat(&p("/r")).await.unwrap();
        st.servers.contains(&"fc".to_string())
    })
    .await;
    assert_eq!(
        stubs[2].blobs.lock().unwrap().get(&(o.entry.id, v1)),
        Some(&content)
    );
    eventually("no under-replicated files", async || {
        c.cluster().await.unwrap().under_replicated.is_empty()
    })
    .await;

    // GC: old versions and blobs of vanished files go; current and in-flight versions stay.
    let (f, cur) = (o.entry.id, v1);
    let future = version_for(4, 0);
    {
        let mut a = stubs[0].blobs.lock().unwrap();
        a.insert((f, version_for(2, 0)), b"old".to_vec());
        a.insert((f, future), b"in flight".to_vec());
        a.insert((999_999, 1), b"orphan".to_vec());
    }
    eventually("gc on fa", async || {
        stubs[0].keys() == vec![(f, cur), (f, future)]
    })
    .await;
    // Unlink: the current version becomes garbage too.
    c.unlink(&p("/r")).await.unwrap();
    eventually("gc after unlink", async || {
        stubs[0].keys().is_empty() && stubs[2].keys().is_empty()
    })
    .await;
    beat.abort();
    ns.stop().await;
}

/// Sends a raw request and checks it gets a 4xx JSON ApiError.
async fn expect_4xx(http: &reqwest::Client, req: reqwest::RequestBuilder, what: &str) {
    let reply = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = reply.status().as_u16();
    let body = reply.bytes().await.unwrap();
    assert!((400..500).contains(&status), "{what}: status {status}");
    let err: ApiError = serde_json::from_slice(&body).unwrap_or_else(|_| {
        panic!(
            "{what}: not a JSON error: {}",
            String::from_utf8_lossy(&body)
        )
    });
    assert!(!err.message.is_empty(), "{what}");
    let _ = http;
}

#[tokio::test]
async fn bad_input_corpus_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    c.mkdir(&p("/a"), None).await.unwrap();
    mkfile(c, "/a/f").await;
    let http = dfs_proto::client::http_client();
    let before_list = c.list(&p("/a")).await.unwrap();
    let before_cluster = c.cluster().await.unwrap();

    let posts = [
        "/v1/meta/mkdir",
        "/v1/meta/rmdir",
        "/v1/meta/create",
        "/v1/meta/unlink",
        "/v1/meta/rename",
        "/v1/meta/setattr",
        "/v1/meta/open-write",
        "/v1/meta/publish",
        "/v1/fileservers/register",
        "/v1/fileservers/heartbeat",
        "/v1/dirs/replication",
        "/v1/meta/xattr/set",
        "/v1/meta/xattr/remove",
    ];
    let bad_paths = [
        "/a/../b",
        "/a/..",
        "..",
        "a/f",
        "",
        "/a/\u{0}x",
        "/a//f",
        "/a/./f",
        "/a/\u{7}",
    ];
    let long_name = format!("/{}", "n".repeat(300));
    let huge = "x".repeat(2 << 20);
    for route in posts {
        let url = format!("{}{route}", ns.url);
        let raw = |body: String| {
            http.post(&url)
                .header("content-type", "application/json")
                .body(body)
        };
        expect_4xx(&http, raw("{".into()), &format!("{route} truncated")).await;
        expect_4xx(&http, raw("not json".into()), &format!("{route} garbage")).await;
        expect_4xx(&http, raw("[]".into()), &format!("{route} array")).await;
        expect_4xx(&http, raw("{}".into()), &format!("{route} empty object")).await;
        expect_4xx(&http, raw("null".into()), &format!("{route} null")).await;
        expect_4xx(
            &http,
            http.post(&url).body(r#"{"path":"/a/z"}"#),
            &format!("{route} no content-type"),
        )
        .await;
        expect_4xx(
            &http,
            raw(format!(r#"{{"path":"/a/z","pad":"{huge}"}}"#)),
            &format!("{route} huge body"),
        )
        .await;
        // Every field set to a valid-looking value plus an unknown one.
        let full = serde_json::json!({
            "path": "/a/z", "from": "/a/f", "to": "/a/z", "mode": 420, "exclusive": false,
            "token": 1, "file_id": 2, "base_version": 0, "version": 1, "size": 0,
            "checksum": "00000000", "servers": [], "id": "fz", "url": "http://127.0.0.1:1",
            "capacity_bytes": 1, "free_bytes": 1, "dirs": [], "no_replace": false,
            "surprise": true
        });
        expect_4xx(
            &http,
            raw(full.to_string()),
            &format!("{route} unknown field"),
        )
        .await;
        for bad in bad_paths.iter().copied().chain([long_name.as_str()]) {
            for field in ["path", "from", "to", "dirs", "dir"] {
                let value = if field == "dirs" {
                    serde_json::json!([bad])
                } else {
                    serde_json::json!(bad)
                };
                let mut body = serde_json::json!({
                    "path": "/a/z", "from": "/a/f", "to": "/a/z", "token": 1, "file_id": 2,
                    "base_version": 0, "version": 1, "size": 0, "checksum": "00000000",
                    "servers": [], "id": "fz", "url": "http://127.0.0.1:1",
                    "capacity_bytes": 1, "free_bytes": 1, "dir": "/a", "replication": 2,
                    "name": "user.x", "value": ""
                });
                body[field] = value;
                // Drop the fields this route does not take, so only the bad path can fail.
                let keep: &[&str] = match route {
                    "/v1/meta/rename" => &["from", "to"],
                    "/v1/meta/open-write" => &["path", "token"],
                    "/v1/meta/publish" => &[
                        "path",
                        "file_id",
                        "base_version",
                        "version",
                        "token",
                        "size",
                        "checksum",
                        "servers",
                    ],
                    "/v1/fileservers/register" => {
                        &["id", "url", "capacity_bytes", "free_bytes", "dirs"]
                    }
                    "/v1/fileservers/heartbeat" => continue,
                    "/v1/dirs/replication" => &["dir", "replication"],
                    "/v1/meta/xattr/set" => &["path", "name", "value"],
                    "/v1/meta/xattr/remove" => &["path", "name"],
                    _ => &["path"],
                };
                if !keep.contains(&field) {
                    continue;
                }
                let obj: serde_json::Map<String, serde_json::Value> = body
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| keep.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                expect_4xx(
                    &http,
                    raw(serde_json::Value::Object(obj).to_string()),
                    &format!("{route} {field}={bad:?}"),
                )
                .await;
            }
        }
    }
    // Wrong types.
    let wrong = [
        ("/v1/meta/mkdir", r#"{"path":"/a/z","mode":"rwx"}"#),
        ("/v1/meta/mkdir", r#"{"path":7}"#),
        ("/v1/meta/mkdir", r#"{"path":"/a/z","mode":-1}"#),
        ("/v1/meta/create", r#"{"path":"/a/z","exclusive":"yes"}"#),
        ("/v1/meta/open-write", r#"{"path":"/a/z","token":-3}"#),
        ("/v1/meta/open-write", r#"{"path":"/a/z","token":1e99}"#),
        ("/v1/meta/setattr", r#"{"path":"/a/f","mtime_ns":"now"}"#),
        (
            "/v1/meta/publish",
            r#"{"path":"/a/f","file_id":2,"base_version":0,"version":1,"token":1,"size":0,"checksum":"zzzz","servers":[]}"#,
        ),
        (
            "/v1/fileservers/register",
            r#"{"id":"","url":"http://x","capacity_bytes":1,"free_bytes":1}"#,
        ),
        (
            "/v1/fileservers/register",
            r#"{"id":"a/b","url":"http://x","capacity_bytes":1,"free_bytes":1}"#,
        ),
        (
            "/v1/fileservers/register",
            r#"{"id":"fz","url":"ftp://x","capacity_bytes":1,"free_bytes":1}"#,
        ),
        (
            "/v1/fileservers/register",
            r#"{"id":"fz","url":"not a url","capacity_bytes":1,"free_bytes":1}"#,
        ),
        (
            "/v1/fileservers/heartbeat",
            r#"{"id":"fz","free_bytes":"lots"}"#,
        ),
        (
            "/v1/fileservers/heartbeat",
            r#"{"id":"../x","free_bytes":1}"#,
        ),
        ("/v1/dirs/replication", r#"{"dir":"/a","replication":0}"#),
        ("/v1/dirs/replication", r#"{"dir":"/a","replication":65}"#),
        ("/v1/dirs/replication", r#"{"dir":"/a","replication":-1}"#),
        ("/v1/dirs/replication", r#"{"dir":"/a","replication":"3"}"#),
        ("/v1/dirs/replication", r#"{"dir":"/a"}"#),
        ("/v1/dirs/replication", r#"{"path":"/a","replication":2}"#),
        (
            "/v1/meta/xattr/set",
            r#"{"path":"/a/f","name":"user.x","value":"%%%"}"#,
        ),
        (
            "/v1/meta/xattr/set",
            r#"{"path":"/a/f","name":"user.x","value":"","mode":"sometimes"}"#,
        ),
        (
            "/v1/meta/xattr/set",
            r#"{"path":"/a/f","name":7,"value":""}"#,
        ),
        ("/v1/meta/xattr/set", r#"{"path":"/a/f","name":"user.x"}"#),
        (
            "/v1/meta/xattr/set",
            r#"{"path":"/a/f","name":"nope.x","value":""}"#,
        ),
        (
            "/v1/meta/xattr/set",
            r#"{"path":"/a/f","name":"user.","value":""}"#,
        ),
        (
            "/v1/meta/xattr/remove",
            r#"{"path":"/a/f","name":"user.x"}"#,
        ),
        ("/v1/meta/xattr/remove", r#"{"path":"/a/f"}"#),
    ];
    for (route, body) in wrong {
        expect_4xx(
            &http,
            http.post(format!("{}{route}", ns.url))
                .header("content-type", "application/json")
                .body(body),
            &format!("{route} {body}"),
        )
        .await;
    }
    // Query endpoints.
    for q in [
        "/v1/meta/stat",
        "/v1/meta/stat?path=",
        "/v1/meta/stat?path=a",
        "/v1/meta/stat?path=/a/%2e%2e",
        "/v1/meta/stat?path=/a/%2E%2E/f",
        "/v1/meta/stat?path=/a/%00",
        "/v1/meta/stat?path=/a/..",
        "/v1/meta/list",
        "/v1/meta/list?path=/a&limit=-1",
        "/v1/meta/list?path=/a&limit=abc",
        "/v1/meta/list?path=/a&after=../x",
        "/v1/meta/list?path=/a&after=/abs",
        "/v1/meta/list?path=%2e%2e",
        "/v1/meta/xattr",
        "/v1/meta/xattr?path=/a/..",
        "/v1/meta/xattr?path=/a/f&name=user.none",
        "/v1/meta/xattr?path=/a/f&name=system.posix_acl_access",
        "/v1/meta/xattr?path=/a/nope",
        "/v1/nope",
    ] {
        expect_4xx(&http, http.get(format!("{}{q}", ns.url)), q).await;
    }
    expect_4xx(
        &http,
        http.delete(format!("{}/v1/meta/stat?path=/a", ns.url)),
        "DELETE stat",
    )
    .await;
    expect_4xx(
        &http,
        http.get(format!("{}/v1/meta/mkdir", ns.url)),
        "GET mkdir",
    )
    .await;

    // Nothing changed.
    assert_eq!(c.list(&p("/a")).await.unwrap(), before_list);
    assert!(c.list_xattr(&p("/a/f")).await.unwrap().is_empty());
    let root: Vec<String> = c
        .list(&p("/"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    assert_eq!(root, vec!["/a"]);
    let after_cluster = c.cluster().await.unwrap();
    assert_eq!(
        after_cluster.fileservers.len(),
        before_cluster.fileservers.len()
    );
    assert!(after_cluster.map.is_empty());
    ns.stop().await;
}

#[tokio::test]
async fn repair_and_gc_with_real_fileservers() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |c| {
        c.heartbeat_interval_ms = 50;
        c.heartbeat_timeout_ms = 400;
        c.repair_interval_ms = 50;
        c.gc_interval_ms = 50;
    })
    .await;
    let c = ns.client.clone();
    let mut servers = live_fileservers(&ns, dir.path(), 3).await;
    let files = dfs_proto::client::FileClient::new();

    // Write v1 to the two targets and publish it.
    let o = c.open_write(&ow("/data", 1, true)).await.unwrap();
    assert_eq!(o.targets.len(), 2);
    let v1 = version_for(1, 1);
    let body = b"first version".to_vec();
    for t in &o.targets {
        files
            .upload_bytes(&t.url, o.entry.id, v1, body.clone())
            .await
            .unwrap();
    }
    let holders: Vec<&str> = o.targets.iter().map(|t| t.id.as_str()).collect();
    let e1 = c
        .publish(&pubreq(&o.entry, 1, 1, &body, &holders))
        .await
        .unwrap();
    assert_eq!(e1.locations.len(), 2);

    // Kill one holder: the file is copied to the third server.
    let victim = servers
        .iter()
        .position(|(id, _, _)| id == &o.targets[0].id)
        .unwrap();
    let (victim_id, stop, task) = servers.remove(victim);
    let _ = stop.send(());
    task.await.unwrap();
    let spare = servers
        .iter()
        .map(|(id, _, _)| id.clone())
        .find(|id| !holders.contains(&id.as_str()))
        .unwrap();
    eventually("repair onto the spare", async || {
        c.stat(&p("/data")).await.unwrap().servers.contains(&spare)
    })
    .await;
    let st = c.stat(&p("/data")).await.unwrap();
    assert!(!st.locations.iter().any(|l| l == &o.targets[0].url));
    assert_eq!(st.locations.len(), 2, "{st:?} (dead: {victim_id})");
    for url in &st.locations {
        assert_eq!(files.download_bytes(url, st.id, v1).await.unwrap(), body);
    }

    // Overwrite: v1 becomes garbage everywhere it lives.
    let o2 = c.open_write(&ow("/data", 2, false)).await.unwrap();
    let v2 = version_for(2, 1);
    let body2 = b"second".to_vec();
    for t in &o2.targets {
        files
            .upload_bytes(&t.url, o2.entry.id, v2, body2.clone())
            .await
            .unwrap();
    }
    let ids: Vec<&str> = o2.targets.iter().map(|t| t.id.as_str()).collect();
    c.publish(&pubreq(&o2.entry, 2, 1, &body2, &ids))
        .await
        .unwrap();
    let live_urls: Vec<String> = c
        .cluster()
        .await
        .unwrap()
        .fileservers
        .into_iter()
        .filter(|f| f.alive)
        .map(|f| f.url)
        .collect();
    eventually("v1 collected", async || {
        for url in &live_urls {
            let list = files.list(url).await.unwrap();
            if list.blobs.iter().any(|b| b.version == v1) {
                return false;
            }
        }
        true
    })
    .await;
    for url in &c.stat(&p("/data")).await.unwrap().locations {
        assert_eq!(
            files.download_bytes(url, o2.entry.id, v2).await.unwrap(),
            body2
        );
    }
    for (_, stop, task) in servers {
        let _ = stop.send(());
        task.await.unwrap();
    }
    ns.stop().await;
}
