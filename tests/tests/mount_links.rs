//! Hard links through real mounts: `ln`, link counts, one inode for every name, a write
//! through one name read through another (on the same mount and on a second one), unlink of
//! one name, and one writer per file whatever name it is opened by.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::{sh, sh_status, Mount};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

fn two_mounts() -> Option<(Cluster, Mount, Mount)> {
    let cluster = Cluster::start(2);
    let a = Mount::try_start(&cluster.nameserver, &[])?;
    let b = Mount::try_start(&cluster.nameserver, &[])?;
    Some((cluster, a, b))
}

/// Waits out the second mount's attribute cache (attr_timeout 1 s).
fn later() {
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn names_share_one_inode_content_and_link_count() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    std::fs::write(a.path("one"), b"first").unwrap();
    std::fs::hard_link(a.path("one"), a.path("two")).unwrap();
    let (m1, m2) = (
        std::fs::metadata(a.path("one")).unwrap(),
        std::fs::metadata(a.path("two")).unwrap(),
    );
    assert_eq!(m1.ino(), m2.ino(), "one inode");
    assert_eq!((m1.nlink(), m2.nlink()), (2, 2));

    // Written through one name, read through the other, here and on the other mount.
    std::fs::write(a.path("two"), b"second").unwrap();
    assert_eq!(std::fs::read(a.path("one")).unwrap(), b"second");
    later();
    assert_eq!(std::fs::read(b.path("one")).unwrap(), b"second");
    assert_eq!(std::fs::read(b.path("two")).unwrap(), b"second");
    assert_eq!(std::fs::metadata(b.path("one")).unwrap().nlink(), 2);
    assert_eq!(
        sh(&format!("stat -c %h {}", b.path("two").display())).trim(),
        "2"
    );

    // A third name in another directory, then unlink two of them: the file stays.
    std::fs::create_dir(a.path("dir")).unwrap();
    std::fs::hard_link(a.path("two"), a.path("dir/three")).unwrap();
    assert_eq!(std::fs::metadata(a.path("one")).unwrap().nlink(), 3);
    std::fs::remove_file(a.path("one")).unwrap();
    std::fs::remove_file(a.path("two")).unwrap();
    assert_eq!(std::fs::read(a.path("dir/three")).unwrap(), b"second");
    assert_eq!(std::fs::metadata(a.path("dir/three")).unwrap().nlink(), 1);
    later();
    assert_eq!(std::fs::read(b.path("dir/three")).unwrap(), b"second");
    // (A listing asks the nameserver; a lookup of the old names may be answered from the
    // kernel's entry cache for entry_timeout.)
    let mut names: Vec<String> = std::fs::read_dir(b.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dir"]);

    // Errors as link(2) gives them.
    let err = std::fs::hard_link(a.path("dir"), a.path("dirlink")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    std::fs::write(a.path("taken"), b"x").unwrap();
    let err = std::fs::hard_link(a.path("dir/three"), a.path("taken")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    let err = std::fs::hard_link(a.path("missing"), a.path("new")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
}

#[test]
fn a_name_unlinked_while_the_other_is_open_keeps_the_file_working() {
    let Some((_cluster, a, _b)) = two_mounts() else {
        return;
    };
    std::fs::write(a.path("f"), b"data").unwrap();
    std::fs::hard_link(a.path("f"), a.path("g")).unwrap();
    let mut open = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(a.path("g"))
        .unwrap();
    std::fs::remove_file(a.path("f")).unwrap();
    std::io::Write::write_all(&mut open, b"+more").unwrap();
    assert_eq!(open.metadata().unwrap().nlink(), 1, "still one name");
    drop(open);
    assert_eq!(std::fs::read(a.path("g")).unwrap(), b"data+more");
    // Through the kernel's cached name, no new lookup: the mount finds the other name.
    let (ok, out) = sh_status(&format!("cat {}", a.path("g").display()));
    assert!(ok && out == "data+more", "{out}");
}

#[test]
fn two_names_of_one_file_never_have_two_writers() {
    let Some((cluster, a, b)) = two_mounts() else {
        return;
    };
    std::fs::write(a.path("x"), b"v1").unwrap();
    std::fs::hard_link(a.path("x"), a.path("y")).unwrap();
    later();
    // A writer on mount A through /x holds the file...
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys, time\nf = open(sys.argv[1], 'a')\nf.write('A')\nf.flush()\ntime.sleep(30)\n")
        .arg(a.path("x"))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .block_on(cluster.locks().list())
        .unwrap()
        .leases
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the writer took no lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...so a write-open through /y, on mount B, is EBUSY, though its lease path differs.
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(b.path("y"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    writer.kill().unwrap();
    writer.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster
        .block_on(cluster.locks().list())
        .unwrap()
        .leases
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the lease was not given back");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first writer's bytes are there under both names, and the other name writes now.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(b.path("y"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"B").unwrap();
    drop(f);
    later();
    assert_eq!(std::fs::read(a.path("x")).unwrap(), b"v1AB");
}

#[test]
fn renaming_over_one_name_leaves_the_other_with_one_link_and_a_new_ctime() {
    let Some((_cluster, a, _b)) = two_mounts() else {
        return;
    };
    std::fs::write(a.path("src"), b"s").unwrap();
    std::fs::write(a.path("dst"), b"d").unwrap();
    std::fs::hard_link(a.path("dst"), a.path("dst_link")).unwrap();
    let before = std::fs::symlink_metadata(a.path("dst_link")).unwrap();
    assert_eq!(before.nlink(), 2);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::rename(a.path("src"), a.path("dst")).unwrap();
    let after = std::fs::symlink_metadata(a.path("dst_link")).unwrap();
    assert_eq!(after.nlink(), 1);
    assert!(
        (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "ctime moves: {} {} -> {} {}",
        before.ctime(),
        before.ctime_nsec(),
        after.ctime(),
        after.ctime_nsec()
    );
    assert_eq!(std::fs::read(a.path("dst_link")).unwrap(), b"d");
    assert_eq!(std::fs::read(a.path("dst")).unwrap(), b"s");
}
