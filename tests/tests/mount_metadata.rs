//! File metadata through a real mount, read back through a second mount: owners (chown by
//! root, a 1777 directory shared by root and `nobody`), chmod and ctime, utimensat,
//! symlinks, FIFOs with a reader and a writer, socket and device nodes, directory link
//! counts. The tests run as root (as CI does); `nobody` runs as a child process with
//! setuid.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::{sh, Mount};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Two mounts of one cluster: changes made through the first are checked through the second.
fn two_mounts() -> Option<(Cluster, Mount, Mount)> {
    let cluster = Cluster::start(2);
    let a = Mount::try_start(&cluster.nameserver, &[])?;
    let b = Mount::try_start(&cluster.nameserver, &[])?;
    Some((cluster, a, b))
}

/// `sh -c script` as `nobody` (uid and gid 65534, no supplementary groups): success and
/// output.
fn sh_as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run sh as nobody");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// lstat through the second mount, after the first mount's change (the second mount's
/// kernel may cache attributes for its attr_timeout of 1 s).
fn lstat_later(path: &Path) -> std::fs::Metadata {
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::symlink_metadata(path).unwrap()
}

#[test]
fn owners_modes_and_ctime() {
    if !is_root() {
        eprintln!("skipping: needs root to chown");
        return;
    }
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    let f = a.path("f");
    std::fs::write(&f, b"x").unwrap();
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "created by root: root's");
    std::os::unix::fs::chown(&f, Some(1000), Some(1001)).unwrap();
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    let other = lstat_later(&b.path("f"));
    assert_eq!(
        (other.uid(), other.gid()),
        (1000, 1001),
        "stored, not local"
    );

    // chmod moves ctime, not mtime.
    let before = std::fs::metadata(&f).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    let after = std::fs::metadata(&f).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert!(
        (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "ctime after chmod"
    );

    // utimensat sets atime and mtime; UTIME_OMIT keeps one.
    let c = CString::new(f.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 5,
        },
        libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 7,
        },
    ];
    // SAFETY: a valid C path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat: {}", std::io::Error::last_os_error());
    let omit_atime = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 1_600_000_000,
            tv_nsec: 0,
        },
    ];
    // SAFETY: as above.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), omit_atime.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat: {}", std::io::Error::last_os_error());
    let m = lstat_later(&b.path("f"));
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 5));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 0));
}

#[test]
fn a_sticky_directory_shared_by_root_and_nobody() {
    if !is_root() {
        eprintln!("skipping: needs root to switch to nobody");
        return;
    }
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    let shared = a.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let s = q(&shared);
    sh(&format!(
        "echo root > {s}/rootfile && chmod 0644 {s}/rootfile"
    ));
    let (ok, out) = sh_as_nobody(&format!("echo mine > {s}/nobodyfile"));
    assert!(ok, "nobody writes in a 1777 directory: {out}");
    let m = lstat_later(&b.path("shared/nobodyfile"));
    assert_eq!(
        (m.uid(), m.gid()),
        (NOBODY, NOBODY),
        "ownership shown right"
    );
    let m = std::fs::metadata(b.path("shared/rootfile")).unwrap();
    assert_eq!(m.uid(), 0);
    // nobody cannot change root's 0644 file: not write, chmod, chown, remove or rename it.
    for script in [
        format!("echo evil > {s}/rootfile"),
        format!("echo evil >> {s}/rootfile"),
        format!("chmod 666 {s}/rootfile"),
        format!("chown {NOBODY} {s}/rootfile"),
        format!("rm -f {s}/rootfile"),
        format!("mv {s}/rootfile {s}/stolen"),
    ] {
        let (ok, out) = sh_as_nobody(&script);
        assert!(!ok, "nobody must not: {script} ({out})");
    }
    assert_eq!(std::fs::read(b.path("shared/rootfile")).unwrap(), b"root\n");
    assert_eq!(
        std::fs::metadata(a.path("shared/rootfile")).unwrap().mode() & 0o777,
        0o644
    );
    // nobody may chgrp its own file only to a group it is in; root may give it away.
    let (ok, _) = sh_as_nobody(&format!("chgrp 0 {s}/nobodyfile"));
    assert!(!ok, "nobody is not in group 0");
    sh(&format!("chown 1234:1234 {s}/nobodyfile"));
    assert_eq!(
        std::fs::metadata(a.path("shared/nobodyfile"))
            .unwrap()
            .uid(),
        1234
    );
}

#[test]
fn symlinks_are_stored_and_followed() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    std::fs::create_dir(a.path("dir")).unwrap();
    std::fs::write(a.path("dir/target.txt"), b"through the link\n").unwrap();
    // ln -s with a relative target, then cat through it (on the other mount too).
    sh(&format!("cd {} && ln -s dir/target.txt rel", q(&a.dir)));
    assert_eq!(
        sh(&format!("cat {}", q(&a.path("rel")))),
        "through the link\n"
    );
    assert_eq!(std::fs::read(b.path("rel")).unwrap(), b"through the link\n");
    let link = std::fs::symlink_metadata(b.path("rel")).unwrap();
    assert!(link.file_type().is_symlink(), "lstat sees the link");
    assert_eq!(link.len(), "dir/target.txt".len() as u64);
    assert_eq!(
        std::fs::read_link(b.path("rel")).unwrap(),
        Path::new("dir/target.txt")
    );
    assert!(
        std::fs::metadata(b.path("rel")).unwrap().is_file(),
        "stat follows"
    );
    // Dangling and looping links.
    std::os::unix::fs::symlink("nowhere", a.path("dangling")).unwrap();
    assert!(std::fs::symlink_metadata(a.path("dangling")).is_ok());
    assert!(std::fs::metadata(a.path("dangling")).is_err());
    std::os::unix::fs::symlink("loop2", a.path("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", a.path("loop2")).unwrap();
    let err = std::fs::read(a.path("loop1")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    // rename and unlink touch the link only.
    std::fs::rename(a.path("rel"), a.path("dir/renamed")).unwrap();
    assert_eq!(
        std::fs::read_link(a.path("dir/renamed")).unwrap(),
        Path::new("dir/target.txt"),
        "the target is stored as given, not resolved"
    );
    std::fs::remove_file(a.path("dir/renamed")).unwrap();
    assert_eq!(
        std::fs::read(a.path("dir/target.txt")).unwrap(),
        b"through the link\n"
    );
    std::fs::remove_file(a.path("dangling")).unwrap();
    // A link to a directory: ls -l shows the arrow.
    std::os::unix::fs::symlink("dir", a.path("dirlink")).unwrap();
    let ls = sh(&format!("ls -l {}", q(&a.dir)));
    assert!(ls.contains("dirlink -> dir"), "{ls}");
    assert!(a.path("dirlink/target.txt").is_file());
}

#[test]
fn a_fifo_on_the_mount_is_a_fifo() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    sh(&format!("mkfifo -m 0600 {}", q(&a.path("pipe"))));
    let m = std::fs::symlink_metadata(b.path("pipe")).unwrap();
    assert!(m.file_type().is_fifo(), "the other mount lists a FIFO");
    assert_eq!(m.mode() & 0o777, 0o600);
    let path = a.path("pipe");
    let writer = std::thread::spawn({
        let path = path.clone();
        move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            for i in 0..100 {
                writeln!(w, "line {i}").unwrap();
            }
        }
    });
    let mut got = String::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    writer.join().unwrap();
    assert_eq!(got.lines().count(), 100);
    assert_eq!(got.lines().last(), Some("line 99"));
    // Renamed and removed like any name.
    std::fs::rename(&path, a.path("pipe2")).unwrap();
    assert!(std::fs::symlink_metadata(a.path("pipe2"))
        .unwrap()
        .file_type()
        .is_fifo());
    std::fs::remove_file(a.path("pipe2")).unwrap();
    assert!(std::fs::symlink_metadata(a.path("pipe2")).is_err());
}

#[test]
fn socket_and_device_nodes() {
    if !is_root() {
        eprintln!("skipping: needs root for mknod of devices");
        return;
    }
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    let m = q(&a.dir);
    sh(&format!(
        "mknod {m}/null c 1 3 && mknod {m}/blk b 7 0 && chmod 0666 {m}/null"
    ));
    let null = lstat_later(&b.path("null"));
    assert!(null.file_type().is_char_device());
    let (major, minor) = (libc::major(null.rdev()), libc::minor(null.rdev()));
    assert_eq!((major, minor), (1, 3));
    assert!(std::fs::symlink_metadata(b.path("blk"))
        .unwrap()
        .file_type()
        .is_block_device());
    // A UNIX socket bound in the mount: its name is a socket entry.
    let sock = a.path("sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert!(std::fs::symlink_metadata(b.path("sock"))
        .unwrap()
        .file_type()
        .is_socket());
    drop(listener);
    std::fs::rename(a.path("sock"), a.path("sock2")).unwrap();
    for name in ["null", "blk", "sock2"] {
        std::fs::remove_file(a.path(name)).unwrap();
    }
    assert_eq!(std::fs::read_dir(&a.dir).unwrap().count(), 0);
}

#[test]
fn directory_link_count_counts_subdirectories() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    std::fs::create_dir_all(a.path("d/one")).unwrap();
    std::fs::create_dir(a.path("d/two")).unwrap();
    std::fs::write(a.path("d/file"), b"").unwrap();
    assert_eq!(std::fs::metadata(a.path("d")).unwrap().nlink(), 4);
    assert_eq!(lstat_later(&b.path("d")).nlink(), 4);
    std::fs::remove_dir(a.path("d/two")).unwrap();
    assert_eq!(std::fs::metadata(a.path("d")).unwrap().nlink(), 3);
    assert_eq!(std::fs::metadata(a.path("d/file")).unwrap().nlink(), 1);
}

#[test]
fn atime_is_kept_by_default_and_recorded_with_relatime() {
    let cluster = Cluster::start(1);
    let Some(plain) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let Some(rel) = Mount::try_start(&cluster.nameserver, &["-o", "relatime"]) else {
        return;
    };
    std::fs::write(plain.path("f"), b"data").unwrap();
    let c = CString::new(plain.path("f").as_os_str().as_bytes()).unwrap();
    let old = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a valid C path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), old.as_ptr(), 0) };
    assert_eq!(rc, 0);
    // noatime (the default): a read records nothing.
    std::fs::read(plain.path("f")).unwrap();
    assert_eq!(lstat_later(&plain.path("f")).atime(), 1_000_000_000);
    // relatime: an atime not newer than mtime moves on read.
    std::fs::read(rel.path("f")).unwrap();
    let m = lstat_later(&plain.path("f"));
    assert!(m.atime() > 1_000_000_000, "atime recorded: {}", m.atime());
    assert_eq!(m.mtime(), 1_000_000_000, "a read changes no mtime");
}
