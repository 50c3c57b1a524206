//! The filesystem layer against a real in-process cluster, without the kernel: the write
//! path (lease, open-write, upload to all targets, publish), the cache, and fencing.

use dfs_client::leases::Leases;
use dfs_fuse::attr::Owner;
use dfs_fuse::cache::Cache;
use dfs_fuse::fs::{AttrChanges, DfsFs, FsConfig, OpenMode};
use dfs_fuse::inodes::ROOT_INO;
use dfs_proto::locks::AcquireRequest;
use dfs_proto::DfsPath;
use dfs_tests::cluster::Cluster;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

fn new_fs(cluster: &Cluster, cache: &std::path::Path) -> (DfsFs, String) {
    let remote = Arc::new(cluster.remote_at(&cluster.nameserver));
    let session = Leases::session_name();
    let leases = Leases::new(remote.clone(), session.clone(), Duration::ZERO);
    let cache = Arc::new(Cache::open(cache, 1 << 30).unwrap());
    let fs = DfsFs::new(
        remote,
        cache,
        leases,
        FsConfig {
            read_only: false,
            owner: Owner::current(),
            relatime: false,
            attr_timeout: Duration::from_secs(1),
            writeback: false,
        },
    );
    (fs, session)
}

const WRITE: OpenMode = OpenMode {
    write: true,
    truncate: false,
    append: false,
};

#[test]
fn write_publish_read_and_cache() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    let (fs, _) = new_fs(&cluster, &tmp.path().join("a"));
    let (fs_b, _) = new_fs(&cluster, &tmp.path().join("b"));
    cluster.block_on(async {
        let (attr, opened) = fs
            .create(
                ROOT_INO,
                OsStr::new("f"),
                0o640,
                libc::O_WRONLY | libc::O_CREAT,
                Owner::current(),
            )
            .await
            .unwrap();
        let ino = attr.ino.0;
        assert_eq!(fs.write(opened.fh, 0, b"hello world").await.unwrap(), 11);
        assert_eq!(
            fs.getattr(ino).await.unwrap().size,
            11,
            "local size while writing"
        );
        // Not visible elsewhere before close.
        let other = fs_b.lookup(ROOT_INO, OsStr::new("f")).await.unwrap();
        assert_eq!(other.size, 0);
        fs.flush(opened.fh).await.unwrap();
        fs.release(opened.fh).await;

        // Published on both fileservers: the entry lists two holders.
        let entry = fs
            .remote()
            .names
            .stat(&DfsPath::parse("/f").unwrap())
            .await
            .unwrap();
        assert_eq!(entry.size, 11);
        assert_eq!(entry.servers.len(), 2);
        assert_eq!(entry.mode & 0o777, 0o640);
        assert!(
            fs.cache().contains(entry.id, entry.version),
            "published file is cached clean"
        );

        let files = cluster.files();
        let before: u64 = {
            let mut n = 0;
            for url in &cluster.fileservers {
                n += files.stats(url).await.unwrap().downloads;
            }
            n
        };
        let b_ino = fs_b.lookup(ROOT_INO, OsStr::new("f")).await.unwrap().ino.0;
        for round in 0..3 {
            let o = fs_b.open(b_ino, OpenMode::default()).await.unwrap();
            assert_eq!(o.keep_cache, round > 0, "kernel cache kept once cached");
            assert_eq!(fs_b.read(o.fh, 0, 100).await.unwrap(), b"hello world");
            assert_eq!(fs_b.read(o.fh, 6, 3).await.unwrap(), b"wor");
            fs_b.release(o.fh).await;
        }
        let mut after = 0;
        for url in &cluster.fileservers {
            after += files.stats(url).await.unwrap().downloads;
        }
        assert_eq!(after, before + 1, "one download for three opens");

        // truncate(2) with no open handle publishes too.
        fs_b.setattr(
            b_ino,
            AttrChanges {
                size: Some(5),
                ..AttrChanges::default()
            },
        )
        .await
        .unwrap();
        let o = fs.open(ino, OpenMode::default()).await.unwrap();
        assert_eq!(fs.read(o.fh, 0, 100).await.unwrap(), b"hello");
        fs.release(o.fh).await;

        // Errors map to errno.
        assert_eq!(
            fs.lookup(ROOT_INO, OsStr::new("missing"))
                .await
                .unwrap_err(),
            fuser::Errno::ENOENT
        );
        fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755, Owner::current())
            .await
            .unwrap();
        assert_eq!(
            fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755, Owner::current())
                .await
                .unwrap_err(),
            fuser::Errno::EEXIST
        );
        let d = fs.lookup(ROOT_INO, OsStr::new("d")).await.unwrap().ino.0;
        fs.create(d, OsStr::new("x"), 0o644, libc::O_WRONLY, Owner::current())
            .await
            .map(|(_, o)| o.fh)
            .map(|fh| futures_release(&fs, fh))
            .unwrap()
            .await;
        assert_eq!(
            fs.rmdir(ROOT_INO, OsStr::new("d")).await.unwrap_err(),
            fuser::Errno::ENOTEMPTY
        );
        assert_eq!(
            fs.open(d, OpenMode::default()).await.unwrap_err(),
            fuser::Errno::EISDIR
        );
    });
}

async fn futures_release(fs: &DfsFs, fh: u64) {
    fs.flush(fh).await.unwrap();
    fs.release(fh).await;
}

#[test]
fn second_writer_is_busy_and_a_fenced_writer_keeps_its_changes() {
    let cluster = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let (fs, session) = new_fs(&cluster, &tmp.path().join("a"));
    let (fs_b, _) = new_fs(&cluster, &tmp.path().join("b"));
    cluster.block_on(async {
        let (attr, o) = fs
            .create(
                ROOT_INO,
                OsStr::new("g"),
                0o644,
                libc::O_WRONLY | libc::O_CREAT,
                Owner::current(),
            )
            .await
            .unwrap();
        fs.write(o.fh, 0, b"first").await.unwrap();
        fs.flush(o.fh).await.unwrap();
        fs.release(o.fh).await;
        let ino = attr.ino.0;

        let w = fs.open(ino, WRITE).await.unwrap();
        fs.write(w.fh, 0, b"SECOND").await.unwrap();
        let b_ino = fs_b.lookup(ROOT_INO, OsStr::new("g")).await.unwrap().ino.0;
        assert_eq!(
            fs_b.open(b_ino, WRITE).await.unwrap_err(),
            fuser::Errno::EBUSY
        );
        let r = fs_b.open(b_ino, OpenMode::default()).await.unwrap();
        assert_eq!(fs_b.read(r.fh, 0, 100).await.unwrap(), b"first");
        fs_b.release(r.fh).await;

        // Steal the lease (as if ours had expired while paused) and publish from B.
        let locks = cluster.locks();
        let leases = locks.list().await.unwrap();
        let ours = leases.leases.iter().find(|l| l.client == session).unwrap();
        locks.release(ours.token, &session).await.unwrap();
        let _other = locks
            .acquire(&AcquireRequest {
                paths: vec![DfsPath::parse("/unrelated").unwrap()],
                client: "someone".into(),
                ttl_ms: None,
            })
            .await
            .unwrap();
        let bw = fs_b.open(b_ino, WRITE).await.unwrap();
        fs_b.write(bw.fh, 0, b"from b").await.unwrap();
        fs_b.flush(bw.fh).await.unwrap();
        fs_b.release(bw.fh).await;

        // A's close now fails (stale/fenced), and its changes stay in dirty/.
        assert_eq!(fs.flush(w.fh).await.unwrap_err(), fuser::Errno::ESTALE);
        fs.release(w.fh).await;
        let left = fs.cache().leftover_dirty();
        assert_eq!(left.len(), 1);
        assert_eq!(std::fs::read(&left[0].0).unwrap(), b"SECOND");
        let meta = left[0].1.clone().unwrap();
        assert_eq!(meta.path, "/g");
        assert!(meta.last_error.is_some());

        let r = fs_b.open(b_ino, OpenMode::default()).await.unwrap();
        assert_eq!(fs_b.read(r.fh, 0, 100).await.unwrap(), b"from b");
        fs_b.release(r.fh).await;
    });
}

const READ: OpenMode = OpenMode {
    write: false,
    truncate: false,
    append: false,
};

/// Creates `name` in the root with `content`, published; returns its inode.
async fn put(fs: &DfsFs, name: &str, content: &[u8]) -> u64 {
    let (attr, o) = fs
        .create(
            ROOT_INO,
            OsStr::new(name),
            0o644,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            Owner::current(),
        )
        .await
        .unwrap();
    fs.write(o.fh, 0, content).await.unwrap();
    futures_release(fs, o.fh).await;
    attr.ino.0
}

async fn read_all(fs: &DfsFs, fh: u64) -> Vec<u8> {
    fs.read(fh, 0, 1 << 20).await.unwrap()
}

/// Issue 10, items 1-4 at the filesystem layer: every descriptor of a file on one mount reads
/// the newest local copy, so an older reader can never feed the kernel's shared page cache
/// with a superseded version, and the size the kernel is told matches what reads return.
#[test]
fn every_descriptor_of_a_file_reads_the_newest_local_copy() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    let (fs, _) = new_fs(&cluster, &tmp.path().join("a"));
    let (fs_b, _) = new_fs(&cluster, &tmp.path().join("b"));
    cluster.block_on(async {
        let ino = put(&fs, "f", b"v1").await;
        let old = fs.open(ino, READ).await.unwrap();
        assert_eq!(read_all(&fs, old.fh).await, b"v1");

        // Another mount publishes a longer version; a new open here moves the old reader too.
        let b_ino = fs_b.lookup(ROOT_INO, OsStr::new("f")).await.unwrap().ino.0;
        let w = fs_b.open(b_ino, WRITE).await.unwrap();
        fs_b.write(w.fh, 0, b"version two").await.unwrap();
        futures_release(&fs_b, w.fh).await;
        // Until then the old reader's size is what the kernel is told (reads return it).
        assert_eq!(fs.getattr(ino).await.unwrap().size, 2);
        let new = fs.open(ino, READ).await.unwrap();
        assert!(!new.keep_cache, "a new version drops the kernel's pages");
        assert_eq!(read_all(&fs, new.fh).await, b"version two");
        assert_eq!(read_all(&fs, old.fh).await, b"version two");
        assert_eq!(fs.getattr(ino).await.unwrap().size, 11);

        // A writer on this mount: every descriptor reads the dirty file, also after publish.
        let w = fs.open(ino, WRITE).await.unwrap();
        fs.write(w.fh, 11, b", extended").await.unwrap();
        assert_eq!(read_all(&fs, old.fh).await, b"version two, extended");
        futures_release(&fs, w.fh).await;
        assert_eq!(read_all(&fs, old.fh).await, b"version two, extended");
        assert_eq!(fs.getattr(ino).await.unwrap().size, 21);
        let rdwr = fs.open(ino, WRITE).await.unwrap();
        assert_eq!(read_all(&fs, rdwr.fh).await, b"version two, extended");
        futures_release(&fs, rdwr.fh).await;
        fs.release(old.fh).await;
        fs.release(new.fh).await;
    });
}

/// Issue 10, item 10: a descriptor of a file removed (here or on another mount) keeps its
/// attributes and its content until it is closed.
#[test]
fn an_open_file_removed_elsewhere_stays_readable() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    let (fs, _) = new_fs(&cluster, &tmp.path().join("a"));
    let (fs_b, _) = new_fs(&cluster, &tmp.path().join("b"));
    cluster.block_on(async {
        let ino = put(&fs, "gone", b"still here").await;
        let r = fs.open(ino, READ).await.unwrap();
        fs_b.lookup(ROOT_INO, OsStr::new("gone")).await.unwrap();
        fs_b.unlink(ROOT_INO, OsStr::new("gone")).await.unwrap();
        // Past the open's own answer (attributes may lag by attr_timeout).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let attr = fs.getattr(ino).await.unwrap();
        assert_eq!((attr.size, attr.nlink), (10, 0));
        assert_eq!(read_all(&fs, r.fh).await, b"still here");

        let ino = put(&fs, "here", b"local unlink").await;
        let r2 = fs.open(ino, READ).await.unwrap();
        fs.unlink(ROOT_INO, OsStr::new("here")).await.unwrap();
        assert_eq!(fs.getattr(ino).await.unwrap().nlink, 0);
        assert_eq!(read_all(&fs, r2.fh).await, b"local unlink");
        fs.release(r.fh).await;
        fs.release(r2.fh).await;
        assert_eq!(fs.getattr(ino).await.unwrap_err(), fuser::Errno::ENOENT);
    });
}

/// Issue 10, items 7 and 10: a write follows its file, not its name. Renamed on another
/// mount, it is published under the new name; removed there, close fails with ESTALE and
/// the bytes are kept; and an unlink here of a name that came to mean another file stops
/// only that file.
#[test]
fn a_write_follows_its_file_not_its_name() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    let (fs, _) = new_fs(&cluster, &tmp.path().join("a"));
    let (fs_b, _) = new_fs(&cluster, &tmp.path().join("b"));
    let stat = |fs: &DfsFs, p: &str| {
        let path = DfsPath::parse(p).unwrap();
        let names = fs.remote().names.clone();
        async move { names.stat(&path).await }
    };
    cluster.block_on(async {
        // Renamed elsewhere while written here.
        let ino = put(&fs, "x", b"old").await;
        let w = fs.open(ino, WRITE).await.unwrap();
        fs.write(w.fh, 0, b"new content").await.unwrap();
        fs_b.lookup(ROOT_INO, OsStr::new("x")).await.unwrap();
        fs_b.rename(
            ROOT_INO,
            OsStr::new("x"),
            ROOT_INO,
            OsStr::new("x.moved"),
            false,
        )
        .await
        .unwrap();
        futures_release(&fs, w.fh).await;
        assert_eq!(stat(&fs_b, "/x.moved").await.unwrap().size, 11);

        // Item 7: B moves the file away and another onto its name; A unlinks "its" name.
        let ino = put(&fs, "y", b"old").await;
        put(&fs_b, "other", b"someone else's").await;
        let w = fs.open(ino, WRITE).await.unwrap();
        fs.write(w.fh, 0, b"mine").await.unwrap();
        fs_b.lookup(ROOT_INO, OsStr::new("y")).await.unwrap();
        fs_b.rename(
            ROOT_INO,
            OsStr::new("y"),
            ROOT_INO,
            OsStr::new("y.moved"),
            false,
        )
        .await
        .unwrap();
        fs_b.rename(
            ROOT_INO,
            OsStr::new("other"),
            ROOT_INO,
            OsStr::new("y"),
            false,
        )
        .await
        .unwrap();
        fs.unlink(ROOT_INO, OsStr::new("y")).await.unwrap();
        futures_release(&fs, w.fh).await;
        let moved = stat(&fs, "/y.moved").await.unwrap();
        assert_eq!(
            moved.size, 4,
            "A's bytes published under the file's new name"
        );
        assert!(stat(&fs, "/y").await.is_err(), "the other file was removed");

        // Removed on another mount: ESTALE, the bytes kept in dirty/.
        let ino = put(&fs, "z", b"old").await;
        let w = fs.open(ino, WRITE).await.unwrap();
        fs.write(w.fh, 0, b"keep me").await.unwrap();
        fs_b.lookup(ROOT_INO, OsStr::new("z")).await.unwrap();
        fs_b.unlink(ROOT_INO, OsStr::new("z")).await.unwrap();
        assert_eq!(fs.flush(w.fh).await.unwrap_err(), fuser::Errno::ESTALE);
        fs.release(w.fh).await;
        let kept: Vec<_> = fs
            .cache()
            .leftover_dirty()
            .into_iter()
            .map(|(p, _)| std::fs::read(p).unwrap())
            .collect();
        assert!(kept.contains(&b"keep me".to_vec()), "kept: {kept:?}");
    });
}

/// Issue 10, item 13: a lease whose publish counter is used up is exchanged for a new one
/// instead of building a version that wrapped (a spurious ESTALE).
#[test]
fn a_used_up_publish_counter_takes_a_new_lease() {
    let cluster = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let (fs, session) = new_fs(&cluster, &tmp.path().join("a"));
    cluster.block_on(async {
        let ino = put(&fs, "busy", b"1").await;
        let w = fs.open(ino, WRITE).await.unwrap();
        let locks = cluster.locks();
        let token = locks
            .list()
            .await
            .unwrap()
            .leases
            .iter()
            .find(|l| l.client == session)
            .unwrap()
            .token;
        fs.leases().set_seq(token, dfs_client::leases::SEQ_LIMIT);
        fs.write(w.fh, 0, b"2").await.unwrap();
        fs.flush(w.fh).await.unwrap();
        fs.write(w.fh, 0, b"3").await.unwrap();
        fs.flush(w.fh).await.unwrap();
        fs.release(w.fh).await;
        let entry = fs
            .remote()
            .names
            .stat(&DfsPath::parse("/busy").unwrap())
            .await
            .unwrap();
        assert!(entry.version >> 20 > token, "published under a newer token");
        let r = fs.open(ino, READ).await.unwrap();
        assert_eq!(read_all(&fs, r.fh).await, b"3");
        fs.release(r.fh).await;
    });
}

/// Issue 10, item 11: a reader whose every location answers 404 (the version it saw was
/// deleted right after a newer publish) asks the nameserver again instead of failing.
#[test]
fn a_version_gone_everywhere_is_asked_for_again() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    let (fs, _) = new_fs(&cluster, &tmp.path().join("a"));
    let (fs_b, _) = new_fs(&cluster, &tmp.path().join("b"));
    cluster.block_on(async {
        let ino = put(&fs_b, "moving", b"first version").await;
        let entry = fs
            .remote()
            .names
            .stat(&DfsPath::parse("/moving").unwrap())
            .await
            .unwrap();
        // Every copy of the current version disappears (as after a prompt delete)...
        let files = cluster.files();
        for url in &cluster.fileservers {
            let _ = files.delete(url, entry.id, entry.version).await;
        }
        fs.lookup(ROOT_INO, OsStr::new("moving")).await.unwrap();
        // ... and the newer version lands while this mount's open is failing over.
        let b_ino = fs_b
            .lookup(ROOT_INO, OsStr::new("moving"))
            .await
            .unwrap()
            .ino
            .0;
        let publisher = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let w = fs_b.open(b_ino, WRITE).await.unwrap();
            fs_b.write(w.fh, 0, b"second version").await.unwrap();
            futures_release(&fs_b, w.fh).await;
        };
        let (opened, ()) = tokio::join!(fs.open(ino, READ), publisher);
        let r = opened.expect("open asks again and finds the newer version");
        assert_eq!(read_all(&fs, r.fh).await, b"second version");
        fs.release(r.fh).await;
    });
}

#[test]
fn xattrs_fallocate_and_exchange_without_the_kernel() {
    use dfs_fuse::xattr::{fit, Fitted, Xattrs};
    use fuser::Errno;
    let cluster = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let (fs, _) = new_fs(&cluster, &tmp.path().join("a"));
    let (fs_b, _) = new_fs(&cluster, &tmp.path().join("b"));
    let (xa, xb) = (
        Xattrs::new(Duration::from_secs(1)),
        Xattrs::new(Duration::from_secs(1)),
    );
    cluster.block_on(async {
        let ino = put(&fs, "f", b"0123456789").await;
        xa.set(&fs, ino, OsStr::new("user.a"), b"1", 0, 1000)
            .await
            .unwrap();
        // Only root reads or writes trusted.*, and only root sees those names.
        let e = xa
            .set(&fs, ino, OsStr::new("trusted.t"), b"1", 0, 1000)
            .await;
        assert_eq!(e, Err(Errno::EPERM));
        xa.set(&fs, ino, OsStr::new("trusted.t"), b"r", 0, 0)
            .await
            .unwrap();
        let ino_b = fs_b.lookup(ROOT_INO, OsStr::new("f")).await.unwrap().ino.0;
        assert_eq!(
            xb.list(&fs_b, ino_b, 1000).await.unwrap(),
            b"user.a\0".to_vec()
        );
        assert_eq!(
            xb.list(&fs_b, ino_b, 0).await.unwrap(),
            b"trusted.t\0user.a\0".to_vec()
        );
        let e = xb.get(&fs_b, ino_b, OsStr::new("trusted.t"), 1000).await;
        assert_eq!(e, Err(Errno::ENODATA));
        let value = xb.get(&fs_b, ino_b, OsStr::new("user.a"), 1000).await;
        assert_eq!(value.unwrap(), b"1");
        let e = xa
            .set(&fs, ino, OsStr::new("user.a"), b"2", libc::XATTR_CREATE, 0)
            .await;
        assert_eq!(e, Err(Errno::EEXIST));
        let e = xa.set(&fs, ino, OsStr::new("user.a"), b"2", 3, 0).await;
        assert_eq!(e, Err(Errno::EINVAL), "both flags at once");
        let e = xa
            .get(&fs, ino, OsStr::new("system.posix_acl_access"), 0)
            .await;
        assert_eq!(e, Err(Errno::EOPNOTSUPP));
        assert_eq!(
            xa.remove(&fs, ino, OsStr::new("user.none"), 0).await,
            Err(Errno::ENODATA)
        );
        // A security.* name missing from a fresh listing is answered without asking.
        xa.note_created(ino);
        xb.set(&fs_b, ino_b, OsStr::new("security.s"), b"s", 0, 0)
            .await
            .unwrap();
        let e = xa.get(&fs, ino, OsStr::new("security.s"), 0).await;
        assert_eq!(e, Err(Errno::ENODATA), "remembered for the timeout");
        let fresh = Xattrs::new(Duration::from_secs(1));
        assert_eq!(
            fresh
                .get(&fs, ino, OsStr::new("security.s"), 0)
                .await
                .unwrap(),
            b"s"
        );
        // Buffer sizes: the length for 0, ERANGE when too small.
        assert!(matches!(fit(b"abc", 0), Ok(Fitted::Len(3))));
        assert!(matches!(fit(b"abc", 3), Ok(Fitted::Data(b"abc"))));
        assert!(matches!(fit(b"abc", 2), Err(Errno::ERANGE)));

        // fallocate: only on a write handle, only the three modes.
        let ro = fs.open(ino, OpenMode::default()).await.unwrap();
        assert_eq!(fs.fallocate(ro.fh, 0, 100, 0).await, Err(Errno::EBADF));
        fs.release(ro.fh).await;
        let w = fs.open(ino, WRITE).await.unwrap();
        let zero_range = libc::FALLOC_FL_ZERO_RANGE;
        assert_eq!(
            fs.fallocate(w.fh, 0, 4, zero_range).await,
            Err(Errno::EOPNOTSUPP)
        );
        assert_eq!(fs.fallocate(w.fh, 0, 0, 0).await, Err(Errno::EINVAL));
        fs.fallocate(w.fh, 0, 20, 0).await.unwrap();
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        fs.fallocate(w.fh, 2, 3, punch).await.unwrap();
        fs.flush(w.fh).await.unwrap();
        fs.release(w.fh).await;
        let r = fs_b.open(ino_b, OpenMode::default()).await.unwrap();
        let mut want = b"01\x00\x00\x0056789".to_vec();
        want.resize(20, 0);
        assert_eq!(read_all(&fs_b, r.fh).await, want);
        fs_b.release(r.fh).await;

        // RENAME_EXCHANGE: the inode follows its file to the other name.
        let g = put(&fs, "g", b"G").await;
        fs.exchange(ROOT_INO, OsStr::new("f"), ROOT_INO, OsStr::new("g"))
            .await
            .unwrap();
        assert_eq!(fs.lookup(ROOT_INO, OsStr::new("f")).await.unwrap().ino.0, g);
        assert_eq!(
            fs.lookup(ROOT_INO, OsStr::new("g")).await.unwrap().ino.0,
            ino
        );
        let e = fs
            .exchange(ROOT_INO, OsStr::new("f"), ROOT_INO, OsStr::new("none"))
            .await;
        assert_eq!(e, Err(Errno::ENOENT));
    });
}
