//! The mount's cache directory removed under it while a file is open (issue 12, item 9): the
//! close of that file fails with EIO and the log says why; the mount recreates its cache
//! directories and keeps working (files can be created, read and written again).

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::Mount;
use std::io::Write;
use std::os::fd::IntoRawFd;

/// Closes `file` and returns what close(2) said (dropping a `File` ignores it).
fn close(file: std::fs::File) -> std::io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken out of a `File`, so it is open and owned by nobody else.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn removing_the_cache_under_an_open_file_fails_its_close_and_the_mount_recovers() {
    let cluster = Cluster::start(1);
    let Some(mount) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    std::fs::write(mount.path("before.txt"), b"published before").unwrap();

    let mut open = std::fs::File::create(mount.path("open.txt")).unwrap();
    open.write_all(b"written while the cache is removed")
        .unwrap();
    std::fs::remove_dir_all(&mount.cache_dir).unwrap();

    let err = close(open).expect_err("close of a file whose local copy was deleted");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let log = mount.log();
    assert!(
        log.contains("was deleted from the cache directory while open"),
        "the log says why close failed:\n{log}"
    );

    // The mount keeps working: new files, reads of published ones, rewrites.
    std::fs::write(mount.path("after.txt"), b"created after").unwrap();
    assert_eq!(
        std::fs::read(mount.path("after.txt")).unwrap(),
        b"created after"
    );
    assert_eq!(
        std::fs::read(mount.path("before.txt")).unwrap(),
        b"published before"
    );
    std::fs::write(mount.path("open.txt"), b"second try").unwrap();
    assert_eq!(
        std::fs::read(mount.path("open.txt")).unwrap(),
        b"second try"
    );
    for sub in ["clean", "dirty", "tmp"] {
        assert!(mount.cache_dir.join(sub).is_dir(), "{sub}/ recreated");
    }
    assert!(mount.log().contains("recreated them"), "{}", mount.log());
}
