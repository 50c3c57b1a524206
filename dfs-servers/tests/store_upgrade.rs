//! The store's schema version: a store written before versions existed (a fixture made by
//! that code) opens, keeps every entry and is upgraded; a newer store is refused.

mod common;

use common::{p, Ns};
use dfs_proto::names::EntryKind;
use dfs_servers::nameserver::namespace;
use dfs_servers::nameserver::store::{Read, Store, SCHEMA_VERSION};
use std::path::Path;

/// A private copy of the fixture, so the test never changes the committed file.
fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1/nameserver.redb");
    std::fs::copy(src, dir.path().join("nameserver.redb")).unwrap();
    dir
}

#[test]
fn a_store_of_the_previous_release_opens_and_is_upgraded() {
    let dir = copy_fixture();
    let store = Store::open(dir.path(), 1).unwrap();
    store
        .read(|r| {
            assert_eq!(r.schema_version()?, SCHEMA_VERSION);
            let (_, docs) = namespace::resolve(r, &p("/docs"))?;
            assert_eq!(docs.kind, EntryKind::Dir);
            assert_eq!(docs.mode, 0o750);
            assert_eq!((docs.uid, docs.gid), (0, 0));
            assert_eq!(docs.subdirs, 2, "sub and sub2 counted");
            assert_eq!(docs.ctime_ns, docs.mtime_ns);
            let (_, root) = namespace::resolve(r, &p("/"))?;
            assert_eq!(root.subdirs, 1);
            let (id, hello) = namespace::resolve(r, &p("/docs/hello.txt"))?;
            assert_eq!(hello.size, 5);
            assert_eq!(hello.servers, vec!["fs1".to_string()]);
            assert_eq!(hello.token, 3);
            assert_eq!(hello.mtime_ns, 1_700_000_000_000_000_007);
            assert_eq!(hello.atime_ns, hello.mtime_ns);
            let e = namespace::entry(&p("/docs/hello.txt"), id, &hello, vec![]);
            assert_eq!((e.uid, e.gid, e.nlink), (0, 0, 1));
            let (_, empty) = namespace::resolve(r, &p("/docs/empty.txt"))?;
            assert_eq!(empty.mode, 0o600);
            namespace::resolve(r, &p("/top"))?;
            namespace::resolve(r, &p("/docs/sub2"))?;
            assert_eq!(r.all_nodes()?.len(), 7);
            assert!(r.fileserver("fs1")?.is_some());
            Ok(())
        })
        .unwrap();
    drop(store);
    // A second open finds the current version and changes nothing.
    let store = Store::open(dir.path(), 2).unwrap();
    let n = store.read(|r| r.all_nodes()).unwrap().len();
    assert_eq!(n, 7);
}

#[test]
fn a_store_of_a_newer_release_is_refused() {
    let dir = copy_fixture();
    let store = Store::open(dir.path(), 1).unwrap();
    store
        .write(|t| t.set_schema_version(SCHEMA_VERSION + 1))
        .unwrap();
    drop(store);
    let err = Store::open(dir.path(), 1)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("newer than"), "{err}");
}

#[tokio::test]
async fn a_nameserver_serves_an_upgraded_store() {
    let dir = copy_fixture();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let e = ns.client.stat(&p("/docs/hello.txt")).await.unwrap();
    assert_eq!((e.size, e.uid, e.gid), (5, 0, 0));
    let d = ns.client.stat(&p("/docs")).await.unwrap();
    assert_eq!(d.nlink, 4);
    ns.stop().await;
}
