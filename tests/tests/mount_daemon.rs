//! How the mount starts and stops: daemonising (returns once usable, or fails with a message
//! and a non-zero exit), `mount -t fuse.dfs-fuse` through mount.fuse3, SIGTERM.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::{fuse_unavailable, is_mounted, skip_fuse, Mount};
use std::process::Command;
use std::time::{Duration, Instant};

fn fuse_ok() -> bool {
    match fuse_unavailable() {
        None => true,
        Some(why) if skip_fuse() => {
            eprintln!("skipping: {why}");
            false
        }
        Some(why) => panic!("FUSE is unusable: {why}. Set DFS_SKIP_FUSE=1 to skip."),
    }
}

fn wait_unmounted(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_mounted(dir) {
        assert!(Instant::now() < deadline, "{} still mounted", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn daemon_returns_once_mounted_and_mount_t_works() {
    if !fuse_ok() {
        return;
    }
    let cluster = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let (mnt, cache) = (tmp.path().join("mnt"), tmp.path().join("cache"));
    std::fs::create_dir(&mnt).unwrap();
    let bin = dfs_tests::bin_path("dfs-fuse");
    // .output() waits for EOF on stdout/stderr: the daemon must not hold them.
    let out = Command::new(&bin)
        .arg(&cluster.nameserver)
        .arg(&mnt)
        .arg("-o")
        .arg(format!("cache_dir={}", cache.display()))
        .env("DFS_KEY", &cluster.keys.client_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(&mnt), "usable when the command returns");
    std::fs::write(mnt.join("hello"), b"hi").unwrap();
    assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), b"hi");
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_unmounted(&mnt);

    // mount(8) -> mount.fuse3 -> `dfs-fuse URL DIR -o opts`. mount(8) runs helpers with a
    // sanitized PATH, so name the binary in the `PROGRAM#SOURCE` form mount.fuse3 accepts
    // (with dfs-fuse installed in /usr/bin, `-t fuse.dfs-fuse URL` is the same).
    let out = Command::new("mount")
        .args(["-t", "fuse"])
        .arg(format!("{}#{}", bin.display(), cluster.nameserver))
        .arg(&mnt)
        .arg("-o")
        .arg(format!(
            "rw,nosuid,nodev,_netdev,cache_dir={},lock_wait=1,key={}",
            cache.display(),
            cluster.keys.client_file.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -t failed: {out:?}");
    assert!(is_mounted(&mnt));
    assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), b"hi");
    assert!(Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    wait_unmounted(&mnt);
}

#[test]
fn daemon_fails_clearly_when_the_cluster_is_unreachable() {
    if !fuse_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = Command::new(dfs_tests::bin_path("dfs-fuse"))
        .arg("http://127.0.0.1:1")
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the nameserver"), "{err}");
    assert!(!is_mounted(&mnt));
    let out = Command::new(dfs_tests::bin_path("dfs-fuse"))
        .args(["not-a-url", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigterm_unmounts_cleanly() {
    let cluster = Cluster::start(1);
    let Some(mut mount) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    std::fs::write(mount.path("kept"), b"data").unwrap();
    let pid = mount.pid().unwrap();
    dfs_tests::process::signal(pid, libc::SIGTERM);
    wait_unmounted(&mount.dir);
    assert_eq!(mount.unmount(), Some(0), "clean exit after SIGTERM");
    // The cache recorded an orderly end (after a syncfs), so its copies outlive a reboot.
    let state = std::fs::read_to_string(mount.cache_dir.join("STATE")).unwrap();
    assert!(state.starts_with("clean "), "{state:?}");
    let again = Mount::start(&cluster.nameserver, &[]);
    assert_eq!(std::fs::read(again.path("kept")).unwrap(), b"data");
}

#[test]
fn a_mount_without_a_valid_key_fails_and_says_how_to_give_one() {
    if !fuse_ok() {
        return;
    }
    let cluster = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let other = dfs_proto::auth::ClusterKey::generate()
        .issue_client("intruder", dfs_proto::auth::Role::Admin)
        .unwrap();
    let foreign = tmp.path().join("foreign.key");
    std::fs::write(&foreign, other.to_text()).unwrap();
    for key in [None, Some(&foreign)] {
        let mut cmd = Command::new(dfs_tests::bin_path("dfs-fuse"));
        cmd.arg(&cluster.nameserver)
            .arg(&mnt)
            .arg("--cache-dir")
            .arg(tmp.path().join("cache"))
            .env_remove("DFS_KEY");
        if let Some(key) = key {
            cmd.arg("--key").arg(key);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refused the mount's credential"), "{err}");
        assert!(err.contains("--key FILE"), "{err}");
        assert!(!is_mounted(&mnt));
    }
}

#[test]
fn a_read_only_key_mounts_for_reading_only() {
    let cluster = Cluster::start(1);
    cluster
        .block_on(
            cluster
                .names()
                .mkdir(&dfs_proto::DfsPath::parse("/d").unwrap(), None),
        )
        .unwrap();
    let key = cluster.key_file("reader", dfs_proto::auth::Role::ReadOnly);
    let Some(mount) = Mount::try_start(&cluster.nameserver, &["--key", key.to_str().unwrap()])
    else {
        return;
    };
    assert!(mount.path("d").is_dir(), "reads work");
    for result in [
        std::fs::write(mount.path("d/new"), b"x"),
        std::fs::create_dir(mount.path("d/sub")),
        std::fs::remove_dir(mount.path("d")),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    }
    assert!(mount.path("d").is_dir(), "nothing changed");
}
