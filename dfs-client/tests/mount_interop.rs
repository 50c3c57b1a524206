//! The client and a real mount of the same cluster work together: what one writes the other
//! reads, and a write lease held by either makes the other's write-open fail with EBUSY.
//!
//! Needs the `dfs-fuse` binary (`cargo build -p dfs-fuse --bins`) and FUSE; set
//! `DFS_SKIP_FUSE=1` to skip where FUSE is unusable.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::Mount;
use std::io::{ErrorKind, Write};

#[test]
fn what_the_client_writes_the_mount_reads_and_the_reverse() {
    let cluster = Cluster::start(2);
    let Some(mount) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let client = cluster.blocking_client();

    client.create_dir("/shared").unwrap();
    client
        .write("/shared/from-client", b"written by the client")
        .unwrap();
    assert_eq!(
        std::fs::read(mount.path("/shared/from-client")).unwrap(),
        b"written by the client"
    );

    std::fs::write(mount.path("/shared/from-mount"), b"written on the mount").unwrap();
    assert_eq!(
        client.read("/shared/from-mount").unwrap(),
        b"written on the mount"
    );

    // A new version from the client replaces what the mount read before.
    let mut file = client
        .options()
        .append(true)
        .open("/shared/from-mount")
        .unwrap();
    file.write_all(b", then by the client").unwrap();
    file.close().unwrap();
    assert_eq!(
        std::fs::read(mount.path("/shared/from-mount")).unwrap(),
        b"written on the mount, then by the client"
    );
}

#[test]
fn a_write_lease_on_either_side_makes_the_other_busy() {
    let cluster = Cluster::start(1);
    let Some(mount) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let client = cluster.blocking_client();
    client.write("/f", b"v1").unwrap();

    // The mount writes: the client cannot open for writing, but reads the last version.
    let mut on_mount = std::fs::OpenOptions::new()
        .write(true)
        .open(mount.path("/f"))
        .unwrap();
    on_mount.write_all(b"v2").unwrap();
    let err = client.create("/f").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceBusy, "{err}");
    assert_eq!(client.read("/f").unwrap(), b"v1");
    drop(on_mount); // close publishes and gives the lease back
    assert_eq!(client.read("/f").unwrap(), b"v2");

    // The client writes: the mount's open for writing fails with EBUSY.
    let mut writer = client.options().write(true).open("/f").unwrap();
    writer.write_all(b"v3").unwrap();
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(mount.path("/f"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    assert_eq!(std::fs::read(mount.path("/f")).unwrap(), b"v2");
    writer.close().unwrap();
    assert_eq!(std::fs::read(mount.path("/f")).unwrap(), b"v3");
}
