//! Extended attributes and RENAME_EXCHANGE at the nameserver: a real server on 127.0.0.1:0,
//! driven through `NameClient`; every error of the xattr endpoints, the limits, durability
//! across a restart, removal with the file, and read-only keys.

mod common;

use common::{p, Ns};
use dfs_proto::auth::{ClusterKey, Role};
use dfs_proto::client::NameClient;
use dfs_proto::names::*;
use dfs_proto::xattr::{SetMode, XattrValue, MAX_TOTAL, MAX_VALUE};
use dfs_proto::{ApiError, ErrorCode};

fn code<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ErrorCode {
    r.expect_err("expected an error").code
}

fn set(path: &str, name: &str, value: &[u8], mode: SetMode) -> SetXattrRequest {
    SetXattrRequest {
        path: p(path),
        name: name.into(),
        value: XattrValue(value.to_vec()),
        mode,
    }
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

#[tokio::test]
async fn xattrs_set_get_list_remove_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    mkfile(c, "/f").await;
    c.mkdir(&p("/d"), None).await.unwrap();

    assert_eq!(c.list_xattr(&p("/f")).await.unwrap(), Vec::<String>::new());
    c.set_xattr(&set("/f", "user.b", b"two", SetMode::Any))
        .await
        .unwrap();
    c.set_xattr(&set("/f", "user.a", &[0, 1, 255], SetMode::Create))
        .await
        .unwrap();
    c.set_xattr(&set("/f", "trusted.t", b"root", SetMode::Any))
        .await
        .unwrap();
    c.set_xattr(&set("/f", "security.s", b"", SetMode::Any))
        .await
        .unwrap();
    c.set_xattr(&set("/d", "user.dir", b"yes", SetMode::Any))
        .await
        .unwrap();
    assert_eq!(
        c.list_xattr(&p("/f")).await.unwrap(),
        ["security.s", "trusted.t", "user.a", "user.b"]
    );
    assert_eq!(c.get_xattr(&p("/f"), "user.a").await.unwrap(), [0, 1, 255]);
    assert_eq!(c.get_xattr(&p("/f"), "security.s").await.unwrap(), b"");
    assert_eq!(c.get_xattr(&p("/d"), "user.dir").await.unwrap(), b"yes");

    // XATTR_CREATE on an existing name, XATTR_REPLACE on a missing one.
    assert_eq!(
        code(
            c.set_xattr(&set("/f", "user.a", b"x", SetMode::Create))
                .await
        ),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(
            c.set_xattr(&set("/f", "user.nope", b"x", SetMode::Replace))
                .await
        ),
        ErrorCode::NoData
    );
    c.set_xattr(&set("/f", "user.a", b"replaced", SetMode::Replace))
        .await
        .unwrap();
    assert_eq!(c.get_xattr(&p("/f"), "user.a").await.unwrap(), b"replaced");

    // Missing attribute, missing file, bad names, namespaces, sizes.
    assert_eq!(
        code(c.get_xattr(&p("/f"), "user.nope").await),
        ErrorCode::NoData
    );
    assert_eq!(
        code(c.remove_xattr(&p("/f"), "user.nope").await),
        ErrorCode::NoData
    );
    assert_eq!(
        code(c.get_xattr(&p("/gone"), "user.a").await),
        ErrorCode::NotFound
    );
    assert_eq!(code(c.list_xattr(&p("/gone")).await), ErrorCode::NotFound);
    assert_eq!(
        code(
            c.set_xattr(&set("/gone", "user.a", b"", SetMode::Any))
                .await
        ),
        ErrorCode::NotFound
    );
    for name in ["system.posix_acl_access", "other.x", "user"] {
        assert_eq!(
            code(c.set_xattr(&set("/f", name, b"", SetMode::Any)).await),
            ErrorCode::NotSupported,
            "{name}"
        );
        assert_eq!(
            code(c.get_xattr(&p("/f"), name).await),
            ErrorCode::NotSupported
        );
    }
    assert_eq!(
        code(c.set_xattr(&set("/f", "user.", b"", SetMode::Any)).await),
        ErrorCode::BadRequest
    );
    let long = format!("user.{}", "n".repeat(251));
    assert_eq!(
        code(c.set_xattr(&set("/f", &long, b"", SetMode::Any)).await),
        ErrorCode::OutOfRange
    );
    c.set_xattr(&set("/f", &long[..255], b"", SetMode::Any))
        .await
        .unwrap();
    c.set_xattr(&set("/f", "user.big", &vec![7; MAX_VALUE], SetMode::Any))
        .await
        .unwrap();
    assert_eq!(
        c.get_xattr(&p("/f"), "user.big").await.unwrap().len(),
        MAX_VALUE
    );
    assert_eq!(
        code(
            c.set_xattr(&set(
                "/f",
                "user.huge",
                &vec![7; MAX_VALUE + 1],
                SetMode::Any
            ))
            .await
        ),
        ErrorCode::TooBig
    );
    // The per-inode bound: three more full values fit in 256 KiB, a fourth does not.
    for i in 0..3 {
        let name = format!("user.fill{i}");
        let r = c
            .set_xattr(&set("/f", &name, &vec![1; MAX_VALUE - 200], SetMode::Any))
            .await;
        r.unwrap();
    }
    let err = c
        .set_xattr(&set("/f", "user.fill3", &vec![1; MAX_VALUE], SetMode::Any))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NoSpace, "{err}");
    assert!(err.message.contains(&MAX_TOTAL.to_string()), "{err}");
    // Replacing an attribute counts its old value out.
    c.set_xattr(&set(
        "/f",
        "user.big",
        &vec![2; MAX_VALUE],
        SetMode::Replace,
    ))
    .await
    .unwrap();

    // A malformed value (not base64) is a 400, never a 500.
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/meta/xattr/set", ns.url))
        .json(&serde_json::json!({"path": "/f", "name": "user.x", "value": "%%%"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let raw = reqwest::Client::new()
        .get(format!("{}/v1/meta/xattr?path=/f&name=foo.bar", ns.url))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: ApiError = raw.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::NotSupported);

    c.remove_xattr(&p("/f"), "user.b").await.unwrap();
    assert_eq!(
        code(c.get_xattr(&p("/f"), "user.b").await),
        ErrorCode::NoData
    );
    assert_eq!(
        code(c.remove_xattr(&p("/f"), "user.b").await),
        ErrorCode::NoData
    );
    ns.stop().await;
}

#[tokio::test]
async fn xattrs_survive_a_restart_and_go_with_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    let f = mkfile(c, "/f").await;
    mkfile(c, "/g").await;
    c.set_xattr(&set("/f", "user.keep", b"1", SetMode::Any))
        .await
        .unwrap();
    c.set_xattr(&set("/g", "user.g", b"g", SetMode::Any))
        .await
        .unwrap();
    ns.stop().await;

    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    assert_eq!(c.get_xattr(&p("/f"), "user.keep").await.unwrap(), b"1");
    // Attributes follow the file through a rename ...
    c.rename(&RenameRequest {
        from: p("/f"),
        to: p("/moved"),
        no_replace: false,
        exchange: false,
    })
    .await
    .unwrap();
    assert_eq!(c.get_xattr(&p("/moved"), "user.keep").await.unwrap(), b"1");
    // ... go with it when it is removed: a new file under the name starts with none ...
    c.unlink(&p("/moved")).await.unwrap();
    let again = mkfile(c, "/moved").await;
    assert_ne!(again.id, f.id);
    assert!(c.list_xattr(&p("/moved")).await.unwrap().is_empty());
    // ... and when it is replaced by a rename.
    c.set_xattr(&set("/moved", "user.m", b"m", SetMode::Any))
        .await
        .unwrap();
    c.rename(&RenameRequest {
        from: p("/g"),
        to: p("/moved"),
        no_replace: false,
        exchange: false,
    })
    .await
    .unwrap();
    assert_eq!(c.list_xattr(&p("/moved")).await.unwrap(), ["user.g"]);
    // A directory's go with it on rmdir.
    c.mkdir(&p("/d"), None).await.unwrap();
    c.set_xattr(&set("/d", "user.d", b"d", SetMode::Any))
        .await
        .unwrap();
    c.rmdir(&p("/d")).await.unwrap();
    c.mkdir(&p("/d"), None).await.unwrap();
    assert!(c.list_xattr(&p("/d")).await.unwrap().is_empty());
    ns.stop().await;
}

#[tokio::test]
async fn read_only_keys_cannot_change_xattrs() {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate();
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, key.to_text()).unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |c| {
        c.cluster_key = Some(key_file.clone());
        c.insecure = false;
    })
    .await;
    let client = |role| {
        let k = key.issue_client("t", role).unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            k.credential().header_value().parse().unwrap(),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        NameClient::with_http(&ns.url, http)
    };
    let (rw, ro) = (client(Role::ReadWrite), client(Role::ReadOnly));
    mkfile(&rw, "/f").await;
    rw.set_xattr(&set("/f", "user.a", b"1", SetMode::Any))
        .await
        .unwrap();
    assert_eq!(ro.get_xattr(&p("/f"), "user.a").await.unwrap(), b"1");
    assert_eq!(ro.list_xattr(&p("/f")).await.unwrap(), ["user.a"]);
    assert_eq!(
        code(ro.set_xattr(&set("/f", "user.b", b"1", SetMode::Any)).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(ro.remove_xattr(&p("/f"), "user.a").await),
        ErrorCode::Forbidden
    );
    assert_eq!(rw.get_xattr(&p("/f"), "user.a").await.unwrap(), b"1");
    ns.stop().await;
}

fn xrn(from: &str, to: &str) -> RenameRequest {
    RenameRequest {
        from: p(from),
        to: p(to),
        no_replace: false,
        exchange: true,
    }
}

#[tokio::test]
async fn rename_exchange_swaps_two_names_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    let a = mkfile(c, "/a").await;
    c.mkdir(&p("/d"), None).await.unwrap();
    let b = mkfile(c, "/d/b").await;
    c.set_xattr(&set("/a", "user.who", b"a", SetMode::Any))
        .await
        .unwrap();

    // A file with a file in another directory.
    let moved = c.rename(&xrn("/a", "/d/b")).await.unwrap();
    assert_eq!((moved.id, moved.path.as_str()), (a.id, "/d/b"));
    assert_eq!(c.stat(&p("/a")).await.unwrap().id, b.id);
    assert_eq!(c.stat(&p("/d/b")).await.unwrap().id, a.id);
    assert_eq!(c.get_xattr(&p("/d/b"), "user.who").await.unwrap(), b"a");

    // A file with a directory (kinds may differ), and back.
    let d = c.stat(&p("/d")).await.unwrap();
    c.rename(&xrn("/a", "/d")).await.unwrap();
    assert_eq!(c.stat(&p("/a")).await.unwrap().id, d.id);
    assert_eq!(c.stat(&p("/a/b")).await.unwrap().id, a.id);
    assert_eq!(c.stat(&p("/d")).await.unwrap().id, b.id);
    c.rename(&xrn("/d", "/a")).await.unwrap();
    assert_eq!(c.stat(&p("/d/b")).await.unwrap().id, a.id);

    // Both must exist; neither may contain the other; not with no_replace.
    assert_eq!(
        code(c.rename(&xrn("/a", "/nope")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(c.rename(&xrn("/nope", "/a")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(c.rename(&xrn("/d", "/d/b")).await),
        ErrorCode::InvalidMove
    );
    assert_eq!(
        code(c.rename(&xrn("/d/b", "/d")).await),
        ErrorCode::InvalidMove
    );
    let mut both = xrn("/a", "/d/b");
    both.no_replace = true;
    assert_eq!(code(c.rename(&both).await), ErrorCode::BadRequest);
    // Exchanging a name with itself changes nothing.
    c.rename(&xrn("/a", "/a")).await.unwrap();
    assert_eq!(c.stat(&p("/a")).await.unwrap().id, b.id);
    let names: Vec<String> = c
        .list(&p("/"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    assert_eq!(names, ["/a", "/d"]);
    ns.stop().await;
}

/// A store written before extended attributes (no `xattrs` table) opens, keeps its files, and
/// takes attributes: the table is created by the first transaction.
#[tokio::test]
async fn a_store_from_before_xattrs_opens_and_takes_them() {
    use dfs_proto::names::EntryKind;
    use dfs_servers::nameserver::store::{Node, ROOT_ID};
    use redb::TableDefinition;
    let dir = tempfile::tempdir().unwrap();
    {
        // The tables of the release before this one, with a root and one file.
        const NODES: TableDefinition<u64, &[u8]> = TableDefinition::new("nodes");
        const CHILDREN: TableDefinition<(u64, &str), u64> = TableDefinition::new("children");
        const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
        let db = redb::Database::create(dir.path().join("nameserver.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut nodes = txn.open_table(NODES).unwrap();
            let root = Node::new(0, "", EntryKind::Dir, 0o755, 1);
            let file = Node::new(ROOT_ID, "old", EntryKind::File, 0o644, 1);
            let root = serde_json::to_vec(&root).unwrap();
            let file = serde_json::to_vec(&file).unwrap();
            nodes.insert(ROOT_ID, root.as_slice()).unwrap();
            nodes.insert(2, file.as_slice()).unwrap();
            let mut children = txn.open_table(CHILDREN).unwrap();
            children.insert((ROOT_ID, "old"), 2).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("next_id", 3).unwrap();
        }
        txn.commit().unwrap();
    }
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    assert_eq!(c.stat(&p("/old")).await.unwrap().id, 2);
    assert!(c.list_xattr(&p("/old")).await.unwrap().is_empty());
    c.set_xattr(&set("/old", "user.new", b"1", SetMode::Any))
        .await
        .unwrap();
    assert_eq!(c.get_xattr(&p("/old"), "user.new").await.unwrap(), b"1");
    ns.stop().await;
}
