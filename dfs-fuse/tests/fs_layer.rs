//! The filesystem layer against a real in-process cluster, without the kernel: the write
//! path (lease, open-write, upload to all targets, publish), the cache, and fencing.

use dfs_fuse::attr::Owner;
use dfs_fuse::cache::Cache;
use dfs_fuse::fs::{DfsFs, FsConfig, OpenMode};
use dfs_fuse::inodes::ROOT_INO;
use dfs_fuse::leases::Leases;
use dfs_fuse::remote::Remote;
use dfs_proto::client::{FileClient, LockClient};
use dfs_proto::locks::AcquireRequest;
use dfs_proto::DfsPath;
use dfs_tests::cluster::Cluster;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

fn new_fs(cluster: &Cluster, cache: &std::path::Path) -> (DfsFs, String) {
    let remote = Arc::new(Remote::new(&cluster.nameserver));
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
            attr_timeout: Duration::from_secs(1),
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

        let files = FileClient::new();
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
        fs_b.setattr(b_ino, None, Some(5), None).await.unwrap();
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
        fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755).await.unwrap();
        assert_eq!(
            fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755)
                .await
                .unwrap_err(),
            fuser::Errno::EEXIST
        );
        let d = fs.lookup(ROOT_INO, OsStr::new("d")).await.unwrap().ino.0;
        fs.create(d, OsStr::new("x"), 0o644, libc::O_WRONLY)
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
        let locks = LockClient::new(&cluster.lockserver);
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
