//! Nameserver metadata: owners (and setgid directories), chown clearing setuid, ctime and
//! atime, symlinks, special files, and directory link counts, over HTTP on 127.0.0.1:0.

mod common;

use common::{p, Ns};
use dfs_proto::names::*;
use dfs_proto::ErrorCode;

fn as_user(uid: u32, gid: u32) -> Option<Owner> {
    Some(Owner { uid, gid })
}

fn setattr(path: &str) -> SetAttrRequest {
    SetAttrRequest {
        path: p(path),
        mode: None,
        mtime_ns: None,
        atime_ns: None,
        uid: None,
        gid: None,
        kill_suid: false,
        access: false,
    }
}

#[tokio::test]
async fn new_entries_take_the_callers_owner_and_a_setgid_directorys_group() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    let d = c
        .mkdir_with(&MkdirRequest {
            path: p("/shared"),
            mode: Some(0o2775),
            owner: as_user(1000, 50),
        })
        .await
        .unwrap();
    assert_eq!((d.uid, d.gid, d.mode), (1000, 50, 0o2775));
    let f = c
        .create(&CreateRequest {
            path: p("/shared/f"),
            mode: Some(0o644),
            exclusive: true,
            owner: as_user(1001, 1001),
        })
        .await
        .unwrap();
    assert_eq!(
        (f.uid, f.gid),
        (1001, 50),
        "group from the setgid directory"
    );
    let sub = c
        .mkdir_with(&MkdirRequest {
            path: p("/shared/sub"),
            mode: Some(0o755),
            owner: as_user(1001, 1001),
        })
        .await
        .unwrap();
    assert_eq!((sub.gid, sub.mode), (50, 0o2755), "setgid inherited");
    // Without an owner (an old client): root.
    let old = c.mkdir(&p("/old"), None).await.unwrap();
    assert_eq!((old.uid, old.gid), (0, 0));
    let ow = c
        .open_write(&OpenWriteRequest {
            path: p("/mine"),
            token: 1,
            create: Some(0o600),
            exclusive: true,
            exclude: vec![],
            owner: as_user(7, 8),
            lease: None,
        })
        .await
        .unwrap();
    assert_eq!((ow.entry.uid, ow.entry.gid), (7, 8));
    ns.stop().await;
}

#[tokio::test]
async fn chown_chmod_and_times_move_ctime() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    let f = c
        .create(&CreateRequest {
            path: p("/f"),
            mode: Some(0o6755),
            exclusive: true,
            owner: as_user(1000, 1000),
        })
        .await
        .unwrap();
    let created_ctime = f.ctime_ns.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let e = c
        .setattr(&SetAttrRequest {
            uid: Some(0),
            gid: Some(0),
            ..setattr("/f")
        })
        .await
        .unwrap();
    assert_eq!((e.uid, e.gid), (0, 0));
    assert_eq!(e.mode, 0o755, "chown clears setuid and (group-exec) setgid");
    assert!(e.ctime_ns.unwrap() > created_ctime);
    let e = c
        .setattr(&SetAttrRequest {
            mode: Some(0o4711),
            ..setattr("/f")
        })
        .await
        .unwrap();
    assert_eq!(e.mode, 0o4711);
    let e = c
        .setattr(&SetAttrRequest {
            kill_suid: true,
            ..setattr("/f")
        })
        .await
        .unwrap();
    assert_eq!(e.mode, 0o711, "a write by a non-owner clears setuid");
    let before = e.ctime_ns.unwrap();
    let e = c
        .setattr(&SetAttrRequest {
            atime_ns: Some(1_000_000_000),
            mtime_ns: Some(2_000_000_000),
            ..setattr("/f")
        })
        .await
        .unwrap();
    assert_eq!(
        (e.atime_ns, e.mtime_ns),
        (Some(1_000_000_000), 2_000_000_000)
    );
    assert!(e.ctime_ns.unwrap() >= before);
    // A read's access time (relatime on a mount) is no change: ctime stays.
    let accessed = c
        .setattr(&SetAttrRequest {
            atime_ns: Some(3_000_000_000),
            access: true,
            ..setattr("/f")
        })
        .await
        .unwrap();
    assert_eq!(accessed.atime_ns, Some(3_000_000_000));
    assert_eq!(accessed.ctime_ns, e.ctime_ns);
    // Survives a restart: it is store state.
    ns.stop().await;
    let ns = Ns::start(dir.path(), |_| {}).await;
    let e = ns.client.stat(&p("/f")).await.unwrap();
    assert_eq!((e.uid, e.mode, e.atime_ns), (0, 0o711, Some(3_000_000_000)));
    ns.stop().await;
}

#[tokio::test]
async fn symlinks_are_entries_with_a_target() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    let link = |path: &str, target: &str| SymlinkRequest {
        path: p(path),
        target: target.into(),
        owner: as_user(5, 6),
    };
    let e = c.symlink(&link("/l", "../nowhere/x")).await.unwrap();
    assert_eq!(e.kind, EntryKind::Symlink);
    assert_eq!(e.target.as_deref(), Some("../nowhere/x"));
    assert_eq!((e.size, e.uid, e.gid, e.mode), (12, 5, 6, 0o777));
    let again = c.symlink(&link("/l", "y")).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::AlreadyExists);
    assert_eq!(
        c.symlink(&link("/m", "")).await.unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        c.symlink(&link("/m", &"a".repeat(4096)))
            .await
            .unwrap_err()
            .code,
        ErrorCode::BadRequest
    );
    // Content writes are refused: a link has no blob.
    let ow = c
        .open_write(&OpenWriteRequest {
            path: p("/l"),
            token: 1,
            create: None,
            exclusive: false,
            exclude: vec![],
            owner: None,
            lease: None,
        })
        .await
        .unwrap_err();
    assert_eq!(ow.code, ErrorCode::BadRequest);
    // Rename and unlink touch the link only.
    c.rename(&RenameRequest {
        from: p("/l"),
        to: p("/l2"),
        no_replace: false,
        exchange: false,
    })
    .await
    .unwrap();
    let listed = c.list(&p("/")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].target.as_deref(), Some("../nowhere/x"));
    c.unlink(&p("/l2")).await.unwrap();
    assert_eq!(
        c.stat(&p("/l2")).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    ns.stop().await;
}

#[tokio::test]
async fn special_files_are_created_listed_renamed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    let node = |path: &str, kind, rdev| MknodRequest {
        path: p(path),
        kind,
        mode: 0o640,
        rdev,
        owner: as_user(3, 4),
    };
    let fifo = c.mknod(&node("/fifo", EntryKind::Fifo, 0)).await.unwrap();
    assert_eq!(
        (fifo.kind, fifo.mode, fifo.uid),
        (EntryKind::Fifo, 0o640, 3)
    );
    c.mknod(&node("/sock", EntryKind::Socket, 0)).await.unwrap();
    let chr = c
        .mknod(&node("/null", EntryKind::CharDevice, 0x0103))
        .await
        .unwrap();
    assert_eq!(chr.rdev, 0x0103);
    c.mknod(&node("/blk", EntryKind::BlockDevice, 0x0800))
        .await
        .unwrap();
    for (path, kind, rdev) in [
        ("/x", EntryKind::File, 0),
        ("/x", EntryKind::Dir, 0),
        ("/x", EntryKind::Fifo, 5),
    ] {
        let e = c.mknod(&node(path, kind, rdev)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{kind:?}");
    }
    let names: Vec<_> = c
        .list(&p("/"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.path.name().to_owned(), e.kind))
        .collect();
    assert_eq!(names.len(), 4);
    assert!(names.contains(&("sock".into(), EntryKind::Socket)));
    c.rename(&RenameRequest {
        from: p("/fifo"),
        to: p("/sock"),
        no_replace: false,
        exchange: false,
    })
    .await
    .unwrap();
    assert_eq!(c.stat(&p("/sock")).await.unwrap().kind, EntryKind::Fifo);
    for path in ["/sock", "/null", "/blk"] {
        c.unlink(&p(path)).await.unwrap();
    }
    assert!(c.list(&p("/")).await.unwrap().is_empty());
    ns.stop().await;
}

#[tokio::test]
async fn directory_link_count_is_two_plus_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    let nlink = |path: &'static str| async move { c.stat(&p(path)).await.unwrap().nlink };
    c.mkdir(&p("/a"), None).await.unwrap();
    c.mkdir(&p("/a/x"), None).await.unwrap();
    c.mkdir(&p("/a/y"), None).await.unwrap();
    c.create(&CreateRequest {
        path: p("/a/file"),
        mode: None,
        exclusive: true,
        owner: None,
    })
    .await
    .unwrap();
    assert_eq!(nlink("/a").await, 4);
    assert_eq!(nlink("/").await, 3);
    assert_eq!(nlink("/a/file").await, 1);
    c.mkdir(&p("/b"), None).await.unwrap();
    c.mkdir(&p("/b/z"), None).await.unwrap();
    // Moving a directory moves one link; replacing an empty directory removes one.
    let mv = |from: &str, to: &str| RenameRequest {
        from: p(from),
        to: p(to),
        no_replace: false,
        exchange: false,
    };
    c.rename(&mv("/a/x", "/b/x")).await.unwrap();
    assert_eq!((nlink("/a").await, nlink("/b").await), (3, 4));
    c.rename(&mv("/a/y", "/b/z")).await.unwrap();
    assert_eq!((nlink("/a").await, nlink("/b").await), (2, 4));
    c.rename(&mv("/b/z", "/b/w")).await.unwrap();
    assert_eq!(nlink("/b").await, 4);
    c.rmdir(&p("/b/w")).await.unwrap();
    assert_eq!(nlink("/b").await, 3);
    assert_eq!(nlink("/").await, 4);
    ns.stop().await;
}

#[tokio::test]
async fn hard_links_survive_renames_unlinks_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    let link = |from: &str, to: &str| LinkRequest {
        path: p(from),
        new_path: p(to),
    };
    let f = c
        .create(&CreateRequest {
            path: p("/f"),
            mode: None,
            exclusive: true,
            owner: None,
        })
        .await
        .unwrap();
    c.mkdir(&p("/d"), None).await.unwrap();
    let g = c.link(&link("/f", "/d/g")).await.unwrap();
    assert_eq!((g.id, g.nlink), (f.id, 2));
    assert!(g.ctime_ns >= f.ctime_ns);
    c.link(&link("/d/g", "/h")).await.unwrap();
    assert_eq!(c.stat(&p("/f")).await.unwrap().nlink, 3);
    // Renaming one name keeps the others; renaming onto another name of the same file
    // changes nothing.
    c.rename(&RenameRequest {
        from: p("/h"),
        to: p("/d/h2"),
        no_replace: false,
        exchange: false,
    })
    .await
    .unwrap();
    c.rename(&RenameRequest {
        from: p("/f"),
        to: p("/d/g"),
        no_replace: false,
        exchange: false,
    })
    .await
    .unwrap();
    assert_eq!(c.stat(&p("/f")).await.unwrap().id, f.id);
    // The main name goes: another one takes its place, by id too.
    let gone = c.unlink(&p("/f")).await.unwrap();
    assert_eq!((gone.id, gone.nlink), (Some(f.id), 2));
    let rest = gone.remaining.unwrap();
    assert!(rest == p("/d/g") || rest == p("/d/h2"), "{rest}");
    assert_eq!(c.stat_id(f.id).await.unwrap().path, rest);
    ns.stop().await;

    let ns = Ns::start(dir.path(), |_| {}).await;
    let c = &ns.client;
    for name in ["/d/g", "/d/h2"] {
        let e = c.stat(&p(name)).await.unwrap();
        assert_eq!((e.id, e.nlink), (f.id, 2), "{name}");
    }
    let gone = c.unlink(&p("/d/h2")).await.unwrap();
    assert_eq!((gone.nlink, gone.remaining), (1, Some(p("/d/g"))));
    let last = c.unlink(&p("/d/g")).await.unwrap();
    assert_eq!((last.nlink, last.remaining), (0, None));
    assert_eq!(c.stat_id(f.id).await.unwrap_err().code, ErrorCode::NotFound);
    // Errors.
    c.mkdir(&p("/dir"), None).await.unwrap();
    let e = c.link(&link("/dir", "/dir2")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotPermitted);
    let e = c.link(&link("/nope", "/x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    ns.stop().await;
}
