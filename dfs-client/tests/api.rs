//! The file-like API against a real in-process cluster: round trips through both APIs,
//! open modes, the write lease (busy, lost), fencing, publishing on drop and on sync_all.

use dfs_client::blocking;
use dfs_proto::locks::AcquireRequest;
use dfs_proto::{ApiError, DfsPath, ErrorCode};
use dfs_tests::cluster::Cluster;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The error code inside an I/O error from the client.
fn code(err: &std::io::Error) -> Option<ErrorCode> {
    err.get_ref()?.downcast_ref::<ApiError>().map(|e| e.code)
}

/// Steals `session`'s lease on a file (as if it had expired while its holder was paused).
async fn steal_lease(cluster: &Cluster, session: &str) {
    let locks = cluster.locks();
    let list = locks.list().await.unwrap();
    let ours = list.leases.iter().find(|l| l.client == session).unwrap();
    locks.release(ours.token, session).await.unwrap();
    // A lease on something else takes a higher token, as another writer's would.
    locks
        .acquire(&AcquireRequest {
            paths: vec![DfsPath::parse("/unrelated").unwrap()],
            client: "someone".into(),
            ttl_ms: None,
        })
        .await
        .unwrap();
}

#[test]
fn async_write_read_round_trip() {
    let cluster = Cluster::start(2);
    cluster.block_on(async {
        let client = cluster.client_at(&cluster.nameserver);
        client.create_dir_all("/a/b").await.unwrap();
        client.create_dir_all("/a/b").await.unwrap();
        let mut file = client.create("/a/b/f.txt").await.unwrap();
        file.write_all(b"hello ").await.unwrap();
        file.write_all(b"world").await.unwrap();
        file.close().await.unwrap();

        let mut file = client.open("/a/b/f.txt").await.unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello world");
        file.seek(SeekFrom::Start(6)).await.unwrap();
        text.clear();
        file.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "world");
        file.close().await.unwrap();

        let meta = client.metadata("/a/b/f.txt").await.unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.len(), 11);
        assert_eq!(
            meta.entry().servers.len(),
            2,
            "published on both fileservers"
        );
        let names: Vec<_> = client
            .read_dir("/a/b")
            .await
            .unwrap()
            .iter()
            .map(|e| e.file_name().to_owned())
            .collect();
        assert_eq!(names, ["f.txt"]);

        // A large file streams through the spool both ways.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        client.write("/a/big", &big).await.unwrap();
        assert_eq!(client.read("/a/big").await.unwrap(), big);

        client.rename("/a/big", "/a/b/big").await.unwrap();
        client.remove_file("/a/b/big").await.unwrap();
        client.remove_file("/a/b/f.txt").await.unwrap();
        let err = client.open("/a/b/f.txt").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        client.remove_dir("/a/b").await.unwrap();
        let err = client.remove_dir("/a").await;
        assert!(err.is_ok(), "{err:?}");
        let err = client.open("/").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::IsADirectory);
    });
}

#[test]
fn blocking_write_read_round_trip_and_interop_with_async() {
    let cluster = Cluster::start(1);
    let client = cluster.blocking_client();
    client.create_dir("/d").unwrap();
    assert_eq!(
        client.create_dir("/d").unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let mut file = client.create("/d/f").unwrap();
    file.write_all(b"0123456789").unwrap();
    file.seek(SeekFrom::Start(2)).unwrap();
    file.write_all(b"AB").unwrap();
    file.close().unwrap();
    let mut text = String::new();
    client
        .open("/d/f")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "01AB456789");

    // The async client reads what the blocking one wrote, and the reverse.
    let async_client = cluster.client_at(&cluster.nameserver);
    cluster.block_on(async {
        assert_eq!(async_client.read("/d/f").await.unwrap(), b"01AB456789");
        async_client.write("/d/g", b"from async").await.unwrap();
    });
    assert_eq!(client.read("/d/g").unwrap(), b"from async");
    assert_eq!(client.metadata("/d/g").unwrap().len(), 10);
    assert_eq!(client.read_dir("/d").unwrap().len(), 2);
}

#[test]
fn open_options_modes() {
    let cluster = Cluster::start(1);
    let client = cluster.blocking_client();
    client.write("/f", b"start").unwrap();

    // append: every write goes to the end.
    let mut file = client.options().append(true).open("/f").unwrap();
    file.write_all(b"+more").unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(b"+end").unwrap();
    file.close().unwrap();
    assert_eq!(client.read("/f").unwrap(), b"start+more+end");

    // write without truncate: the content is downloaded and changed in place.
    let mut file = client.options().read(true).write(true).open("/f").unwrap();
    let mut head = [0u8; 5];
    file.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"start");
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(b"START").unwrap();
    file.close().unwrap();
    assert_eq!(client.read("/f").unwrap(), b"START+more+end");

    // truncate: starts empty, and is a change even with no write.
    let file = client
        .options()
        .write(true)
        .truncate(true)
        .open("/f")
        .unwrap();
    assert_eq!(file.len().unwrap(), 0);
    file.close().unwrap();
    assert_eq!(client.metadata("/f").unwrap().len(), 0);

    // create_new on an existing file, write without create on a missing one.
    let err = client
        .options()
        .write(true)
        .create_new(true)
        .open("/f")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    let err = client.options().write(true).open("/missing").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let mut file = client
        .options()
        .write(true)
        .create_new(true)
        .open("/new")
        .unwrap();
    file.write_all(b"new").unwrap();
    file.close().unwrap();
    assert_eq!(client.read("/new").unwrap(), b"new");

    // The combinations std refuses; reading a write-only file fails.
    let invalid = client.options().read(true).truncate(true).open("/f");
    assert_eq!(invalid.unwrap_err().kind(), ErrorKind::InvalidInput);
    let invalid = client.options().append(true).truncate(true).open("/f");
    assert_eq!(invalid.unwrap_err().kind(), ErrorKind::InvalidInput);
    let mut file = client.options().write(true).open("/new").unwrap();
    assert!(file.read(&mut [0u8; 4]).is_err());
    let mut reader = client.open("/new").unwrap();
    assert!(
        reader.write(b"x").is_err(),
        "a read-only file refuses writes"
    );
    drop(reader);
    file.close().unwrap();
}

#[test]
fn a_second_writer_gets_resource_busy_and_readers_see_the_last_version() {
    let cluster = Cluster::start(1);
    let a = cluster.blocking_client();
    let b = cluster.blocking_client();
    a.write("/f", b"v1").unwrap();
    let mut writer = a.options().write(true).open("/f").unwrap();
    writer.write_all(b"v2").unwrap();
    let err = b.create("/f").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceBusy);
    assert_eq!(code(&err), Some(ErrorCode::Busy));
    assert_eq!(b.read("/f").unwrap(), b"v1", "readers are never blocked");
    writer.close().unwrap();
    // The lease was given back at close: the other client writes at once.
    b.write("/f", b"v3").unwrap();
    assert_eq!(a.read("/f").unwrap(), b"v3");

    // With a lock wait, the second writer waits for the first one's close.
    let waiting = blocking::Client::builder(&cluster.nameserver)
        .key(cluster.keys.client.clone())
        .lock_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let writer = a.options().write(true).open("/f").unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        writer.close().unwrap();
    });
    let started = Instant::now();
    waiting.write("/f", b"after the wait").unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    closer.join().unwrap();
    assert_eq!(a.read("/f").unwrap(), b"after the wait");
}

#[test]
fn sync_all_publishes_without_closing() {
    let cluster = Cluster::start(1);
    let client = cluster.blocking_client();
    let other = cluster.blocking_client();
    let mut file = client.create("/f").unwrap();
    file.write_all(b"first").unwrap();
    assert_eq!(
        other.read("/f").unwrap(),
        b"",
        "nothing visible before a publish"
    );
    file.sync_all().unwrap();
    let first = file.published().unwrap().version;
    assert_eq!(other.read("/f").unwrap(), b"first");
    file.write_all(b" second").unwrap();
    file.sync_all().unwrap();
    assert!(file.published().unwrap().version > first);
    assert_eq!(other.read("/f").unwrap(), b"first second");
    // Still the writer: the lease is held until close.
    assert_eq!(
        other.create("/f").unwrap_err().kind(),
        ErrorKind::ResourceBusy
    );
    file.close().unwrap();
    other.write("/f", b"mine").unwrap();
}

#[test]
fn dropping_a_changed_file_publishes_it() {
    let cluster = Cluster::start(1);
    let client = cluster.blocking_client();
    let mut file = client.create("/blocking").unwrap();
    file.write_all(b"dropped, not closed").unwrap();
    drop(file); // blocking: published inside drop
    assert_eq!(client.read("/blocking").unwrap(), b"dropped, not closed");
    client.write("/blocking", b"lease given back").unwrap();

    let async_client = cluster.client_at(&cluster.nameserver);
    cluster.block_on(async {
        let mut file = async_client.create("/async").await.unwrap();
        file.write_all(b"dropped in a runtime").await.unwrap();
        drop(file); // async: published by a task spawned on this runtime
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let read = async_client.read("/async").await.unwrap();
            if read == b"dropped in a runtime" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the dropped file was never published"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And its lease was given back.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(err) = async_client.write("/async", b"next").await {
            assert_eq!(err.kind(), ErrorKind::ResourceBusy);
            assert!(Instant::now() < deadline, "the dropped file kept its lease");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn a_fenced_writer_gets_a_stale_handle_error_and_keeps_its_changes() {
    let cluster = Cluster::start(1);
    let spool = tempfile::tempdir().unwrap();
    let a = blocking::Client::builder(&cluster.nameserver)
        .key(cluster.keys.client.clone())
        .session("writer-a")
        .spool_dir(spool.path())
        .build()
        .unwrap();
    let b = cluster.blocking_client();
    a.write("/g", b"first").unwrap();
    let mut paused = a.options().write(true).open("/g").unwrap();
    paused.write_all(b"SECOND").unwrap();

    cluster.block_on(steal_lease(&cluster, "writer-a"));
    b.write("/g", b"from b").unwrap();

    let err = paused.close().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StaleNetworkFileHandle, "{err}");
    assert!(matches!(
        code(&err),
        Some(ErrorCode::Stale | ErrorCode::Fenced)
    ));
    assert_eq!(b.read("/g").unwrap(), b"from b", "the newer version stays");
    // The unpublished content is kept in the spool directory, named in the error.
    let kept: Vec<_> = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"SECOND");
    assert!(err.to_string().contains(&kept[0].display().to_string()));
}

#[test]
fn a_lost_lease_fails_further_writes_and_close() {
    let cluster = Cluster::start_tuned(
        1,
        |_| {},
        |locks| {
            locks.ttl_ms = 900;
            locks.lock_delay_ms = 100;
            locks.restart_grace_ms = Some(900);
        },
    );
    let client = blocking::Client::builder(&cluster.nameserver)
        .key(cluster.keys.client.clone())
        .session("writer-lost")
        .build()
        .unwrap();
    let mut file = client.create("/h").unwrap();
    file.write_all(b"before").unwrap();
    cluster.block_on(steal_lease(&cluster, "writer-lost"));
    // The next renewal (every ttl/3) finds the lease gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match file.write_all(b"x") {
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "the lost lease was never noticed"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => break err,
        }
    };
    assert_eq!(code(&err), Some(ErrorCode::LeaseExpired), "{err}");
    assert!(file.close().is_err());
}

#[test]
fn extended_attributes_and_exchange_through_the_client() {
    use dfs_proto::xattr::SetMode;
    let cluster = Cluster::start(1);
    cluster.block_on(async {
        let client = cluster.client_at(&cluster.nameserver);
        client.write("/a", b"A").await.unwrap();
        client.write("/b", b"B").await.unwrap();
        client
            .set_xattr("/a", "user.k", b"v", SetMode::Create)
            .await
            .unwrap();
        let err = client
            .set_xattr("/a", "user.k", b"w", SetMode::Create)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(client.get_xattr("/a", "user.k").await.unwrap(), b"v");
        assert_eq!(client.list_xattr("/a").await.unwrap(), ["user.k"]);
        let err = client.get_xattr("/a", "user.none").await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::NoData));
        let err = client
            .set_xattr("/a", "system.posix_acl_access", b"", SetMode::Any)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);

        client.exchange("/a", "/b").await.unwrap();
        assert_eq!(client.read("/a").await.unwrap(), b"B");
        assert_eq!(client.read("/b").await.unwrap(), b"A");
        assert_eq!(client.get_xattr("/b", "user.k").await.unwrap(), b"v");
        client.remove_xattr("/b", "user.k").await.unwrap();
        assert!(client.list_xattr("/b").await.unwrap().is_empty());
    });
    let sync = cluster.blocking_client();
    sync.set_xattr("/a", "user.s", b"sync", SetMode::Any)
        .unwrap();
    assert_eq!(sync.get_xattr("/a", "user.s").unwrap(), b"sync");
    assert_eq!(sync.list_xattr("/a").unwrap(), ["user.s"]);
    sync.exchange("/a", "/b").unwrap();
    sync.remove_xattr("/b", "user.s").unwrap();
    assert!(sync.list_xattr("/b").unwrap().is_empty());
}

#[test]
fn upload_publishes_a_local_file_without_a_spool_and_keeps_the_write_rules() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    // Large enough to stream (over the small-file limit), with a recognisable pattern.
    let big: Vec<u8> = (0..(1u32 << 20) + 12_345)
        .map(|i| (i % 251) as u8)
        .collect();
    let local = tmp.path().join("big.bin");
    std::fs::write(&local, &big).unwrap();
    let spools = tmp.path().join("spools");
    std::fs::create_dir(&spools).unwrap();
    cluster.block_on(async {
        let client = dfs_client::Client::builder(&cluster.nameserver)
            .key(cluster.keys.client.clone())
            .spool_dir(&spools)
            .build();
        let mut reported = Vec::new();
        let meta = client
            .upload_with_progress(&local, "/big.bin", |sent| reported.push(sent))
            .await
            .unwrap();
        assert_eq!(meta.len(), big.len() as u64);
        assert_eq!(meta.entry().servers.len(), 2, "published on both replicas");
        assert!(reported.windows(2).all(|w| w[0] <= w[1]), "{reported:?}");
        assert!(
            reported.iter().all(|&n| n <= big.len() as u64),
            "{reported:?}"
        );
        assert_eq!(client.read("/big.bin").await.unwrap(), big);
        assert_eq!(
            std::fs::read_dir(&spools).unwrap().count(),
            0,
            "no spool copy of an uploaded file"
        );

        // Replacing: a small file, the whole content replaced.
        std::fs::write(&local, b"small now").unwrap();
        client.upload(&local, "/big.bin").await.unwrap();
        assert_eq!(client.read("/big.bin").await.unwrap(), b"small now");

        // A writer elsewhere holds the lease: ResourceBusy, nothing published.
        let other = cluster.client_at(&cluster.nameserver);
        let mut held = other.create("/big.bin").await.unwrap();
        held.write_all(b"theirs").await.unwrap();
        let busy = client.upload(&local, "/big.bin").await.unwrap_err();
        assert_eq!(busy.kind(), ErrorKind::ResourceBusy, "{busy}");
        held.close().await.unwrap();
        assert_eq!(client.read("/big.bin").await.unwrap(), b"theirs");

        // Bad input: a directory as the source, a directory as the target.
        let not_file = client.upload(tmp.path(), "/x").await.unwrap_err();
        assert_eq!(not_file.kind(), ErrorKind::InvalidInput, "{not_file}");
        client.create_dir("/dir").await.unwrap();
        let is_dir = client.upload(&local, "/dir").await.unwrap_err();
        assert_eq!(code(&is_dir), Some(ErrorCode::IsDirectory), "{is_dir}");
    });
}

#[test]
fn an_expired_read_capability_is_asked_for_again() {
    use dfs_proto::auth::{now_unix_ms, BlobOp};
    let cluster = Cluster::start(1);
    cluster.block_on(async {
        let client = cluster.client_at(&cluster.nameserver);
        client.write("/f", b"content").await.unwrap();
        let path = DfsPath::parse("/f").unwrap();
        let mut entry = client.remote().names.stat(&path).await.unwrap();
        assert!(
            entry.read_cap.is_some(),
            "a keyed cluster gives read capabilities"
        );
        // An entry held past its capability's expiry, as a long-lived cache would.
        let expired = now_unix_ms() - 1;
        entry.read_cap = Some(cluster.keys.cluster.capability(
            entry.id,
            entry.version,
            BlobOp::Read,
            expired,
        ));
        let dest = tempfile::NamedTempFile::new().unwrap();
        client.remote().download(&entry, dest.path()).await.unwrap();
        assert_eq!(std::fs::read(dest.path()).unwrap(), b"content");
        // Not when the file changed meanwhile: then the refusal stands.
        client.write("/f", b"newer").await.unwrap();
        let err = client
            .remote()
            .download(&entry, dest.path())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    });
}

#[test]
fn hard_links_share_content_and_the_last_name_takes_it() {
    let cluster = Cluster::start(2);
    cluster.block_on(async {
        let client = cluster.client_at(&cluster.nameserver);
        client.write("/a", b"shared bytes").await.unwrap();
        client.hard_link("/a", "/b").await.unwrap();
        let (a, b) = (
            client.metadata("/a").await.unwrap(),
            client.metadata("/b").await.unwrap(),
        );
        assert_eq!((a.entry().nlink, b.entry().nlink), (2, 2));
        assert_eq!(a.entry().id, b.entry().id, "one file");
        client.write("/b", b"written through b").await.unwrap();
        assert_eq!(client.read("/a").await.unwrap(), b"written through b");

        // A writer through one name makes the other busy.
        let mut open = client.create("/a").await.unwrap();
        open.write_all(b"x").await.unwrap();
        let other = cluster.client_at(&cluster.nameserver);
        let err = other.create("/b").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceBusy, "{err}");
        open.close().await.unwrap();

        let id = a.entry().id;
        let held = || async {
            let mut n = 0;
            for server in &cluster.fileservers {
                let blobs = cluster.files().list(server).await.unwrap().blobs;
                n += blobs.iter().filter(|b| b.file_id == id).count();
            }
            n
        };
        client.remove_file("/a").await.unwrap();
        assert_eq!(client.read("/b").await.unwrap(), b"x");
        assert_eq!(client.metadata("/b").await.unwrap().entry().nlink, 1);
        assert!(held().await > 0, "content kept while a name is left");
        client.remove_file("/b").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while held().await > 0 {
            assert!(
                Instant::now() < deadline,
                "the content outlived its last name"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Errors as link(2) gives them.
        client.create_dir("/d").await.unwrap();
        let err = client.hard_link("/d", "/d2").await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::NotPermitted), "{err}");
        client.write("/c", b"c").await.unwrap();
        client.write("/e", b"e").await.unwrap();
        let err = client.hard_link("/c", "/e").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
        let err = client.hard_link("/missing", "/f").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    });
}
