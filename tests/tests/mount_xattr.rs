//! Extended attributes, fallocate, RENAME_EXCHANGE and unlinked-but-open files on a real
//! mount, read back through a second mount of the same cluster.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::Mount;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `setxattr(2)` with flags; the errno on failure.
fn setxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> Result<(), i32> {
    let name = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let rc = unsafe {
        libc::setxattr(
            c(path).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// `getxattr(2)` into a buffer of `size` bytes: the length it returned, or the errno.
fn getxattr_len(path: &Path, name: &str, size: usize) -> Result<usize, i32> {
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; size];
    // SAFETY: valid strings and a buffer of `size` bytes.
    let rc = unsafe {
        libc::getxattr(
            c(path).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            size,
        )
    };
    if rc >= 0 {
        Ok(rc as usize)
    } else {
        Err(last_errno())
    }
}

fn get(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(path, name).unwrap()
}

fn names(path: &Path) -> Vec<String> {
    let mut out: Vec<String> = xattr::list(path)
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn xattrs_set_on_one_mount_are_seen_by_another() {
    let cluster = Cluster::start(1);
    let Some(a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let b = Mount::start(&cluster.nameserver, &[]);
    let f = a.path("f");
    std::fs::write(&f, b"content").unwrap();
    std::fs::create_dir(a.path("d")).unwrap();

    xattr::set(&f, "user.color", b"blue").unwrap();
    xattr::set(a.path("d"), "user.dir", b"yes").unwrap();
    xattr::set(&f, "trusted.root", b"only root").unwrap();
    xattr::set(&f, "security.label", b"s").unwrap();
    let bf = b.path("f");
    assert_eq!(get(&bf, "user.color").as_deref(), Some(&b"blue"[..]));
    assert_eq!(get(&b.path("d"), "user.dir").as_deref(), Some(&b"yes"[..]));
    assert_eq!(names(&bf), ["security.label", "trusted.root", "user.color"]);
    // The content is untouched by attributes, and attributes by a content change.
    std::fs::write(&bf, b"new content").unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"new content");
    assert_eq!(get(&f, "user.color").as_deref(), Some(&b"blue"[..]));

    // XATTR_CREATE / XATTR_REPLACE.
    assert_eq!(
        setxattr(&f, "user.color", b"red", libc::XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        setxattr(&f, "user.absent", b"x", libc::XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    setxattr(&f, "user.color", b"green", libc::XATTR_REPLACE).unwrap();
    setxattr(&f, "user.fresh", b"new", libc::XATTR_CREATE).unwrap();
    assert_eq!(get(&bf, "user.color").as_deref(), Some(&b"green"[..]));

    // Missing, buffer sizes, namespaces, limits.
    assert_eq!(get(&f, "user.absent"), None);
    assert_eq!(getxattr_len(&f, "user.absent", 64), Err(libc::ENODATA));
    assert_eq!(getxattr_len(&f, "user.color", 0), Ok(5));
    assert_eq!(getxattr_len(&f, "user.color", 2), Err(libc::ERANGE));
    assert_eq!(getxattr_len(&f, "user.color", 5), Ok(5));
    // A well-formed ACL (the kernel parses it first): u::rw-, g::r--, o::r--.
    let acl: Vec<u8> = [
        &[2u8, 0, 0, 0][..],
        &[1, 0, 6, 0, 255, 255, 255, 255],
        &[4, 0, 4, 0, 255, 255, 255, 255],
        &[32, 0, 4, 0, 255, 255, 255, 255],
    ]
    .concat();
    assert_eq!(
        setxattr(&f, "system.posix_acl_access", &acl, 0),
        Err(libc::EOPNOTSUPP)
    );
    assert_eq!(
        getxattr_len(&f, "system.posix_acl_access", 64),
        Err(libc::EOPNOTSUPP)
    );
    assert_eq!(setxattr(&f, "other.x", b"x", 0), Err(libc::EOPNOTSUPP));
    let long = format!("user.{}", "n".repeat(251));
    assert_eq!(setxattr(&f, &long, b"x", 0), Err(libc::ERANGE));
    setxattr(&f, "user.big", &vec![9u8; 64 * 1024], 0).unwrap();
    assert_eq!(get(&bf, "user.big").map(|v| v.len()), Some(64 * 1024));
    assert_eq!(
        setxattr(&f, "user.huge", &vec![9u8; 64 * 1024 + 1], 0),
        Err(libc::E2BIG)
    );

    // Remove; then it is gone everywhere.
    xattr::remove(&f, "user.color").unwrap();
    assert_eq!(get(&bf, "user.color"), None);
    let err = xattr::remove(&bf, "user.color").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
    // Attributes go with their file: a new file under the name has none.
    std::fs::remove_file(&f).unwrap();
    std::fs::write(&f, b"again").unwrap();
    assert!(names(&f).is_empty());
}

fn fallocate(file: &std::fs::File, mode: i32, offset: i64, len: i64) -> Result<(), i32> {
    // SAFETY: a syscall on a descriptor the caller keeps open.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

#[test]
fn fallocate_modes_on_a_file_open_for_writing() {
    let cluster = Cluster::start(1);
    let Some(a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let b = Mount::start(&cluster.nameserver, &[]);
    std::fs::write(a.path("f"), vec![b'x'; 100]).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.path("f"))
        .unwrap();
    // Mode 0 grows the file; KEEP_SIZE does not.
    fallocate(&file, 0, 50, 150).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 200);
    fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, 0, 4096).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 200);
    // A punched hole reads as zeros, also through the page cache.
    let mut before = [0u8; 100];
    file.read_exact_at(&mut before, 0).unwrap();
    fallocate(
        &file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        10,
        20,
    )
    .unwrap();
    let mut data = vec![0u8; 200];
    file.read_exact_at(&mut data, 0).unwrap();
    assert_eq!(&data[..10], &[b'x'; 10]);
    assert_eq!(&data[10..30], &[0u8; 20]);
    assert_eq!(&data[30..100], &[b'x'; 70]);
    assert!(data[100..].iter().all(|&b| b == 0));
    // Other modes are not offered; a punch without KEEP_SIZE is invalid as on ext4.
    assert_eq!(
        fallocate(&file, libc::FALLOC_FL_ZERO_RANGE, 0, 10),
        Err(libc::EOPNOTSUPP)
    );
    assert_eq!(
        fallocate(&file, libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4096),
        Err(libc::EOPNOTSUPP)
    );
    drop(file); // close publishes
    let seen = std::fs::read(b.path("f")).unwrap();
    assert_eq!(seen, data);
    // Read-only descriptors cannot allocate.
    let ro = std::fs::File::open(a.path("f")).unwrap();
    assert_eq!(fallocate(&ro, 0, 0, 10), Err(libc::EBADF));
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> Result<(), i32> {
    // SAFETY: valid NUL-terminated paths; renameat2 has no libc wrapper on every target.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            c(from).as_ptr(),
            libc::AT_FDCWD,
            c(to).as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

#[test]
fn rename_exchange_swaps_two_names() {
    let cluster = Cluster::start(1);
    let Some(a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let b = Mount::start(&cluster.nameserver, &[]);
    std::fs::create_dir(a.path("d")).unwrap();
    std::fs::write(a.path("one"), b"first").unwrap();
    std::fs::write(a.path("d/two"), b"second").unwrap();
    // (Mount b looks the names up only after the swap: a name it resolved before may keep
    // meaning the old file for up to entry_timeout, as after any rename elsewhere.)
    let ino_one = std::fs::metadata(a.path("one")).unwrap().ino();

    renameat2(&a.path("one"), &a.path("d/two"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(std::fs::read(a.path("one")).unwrap(), b"second");
    assert_eq!(std::fs::read(a.path("d/two")).unwrap(), b"first");
    assert_eq!(std::fs::metadata(a.path("d/two")).unwrap().ino(), ino_one);
    assert_eq!(std::fs::read(b.path("d/two")).unwrap(), b"first");
    assert_eq!(std::fs::read(b.path("one")).unwrap(), b"second");

    // A file with a directory.
    renameat2(&a.path("one"), &a.path("d"), libc::RENAME_EXCHANGE).unwrap();
    assert!(std::fs::metadata(a.path("one")).unwrap().is_dir());
    assert_eq!(std::fs::read(a.path("one/two")).unwrap(), b"first");
    assert_eq!(std::fs::read(a.path("d")).unwrap(), b"second");

    // Both names must exist; NOREPLACE refuses an existing target.
    assert_eq!(
        renameat2(&a.path("d"), &a.path("missing"), libc::RENAME_EXCHANGE),
        Err(libc::ENOENT)
    );
    assert_eq!(
        renameat2(&a.path("d"), &a.path("one/two"), libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    renameat2(&a.path("d"), &a.path("moved"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(std::fs::read(b.path("moved")).unwrap(), b"second");
}

#[test]
fn an_unlinked_file_stays_usable_through_its_open_descriptors() {
    let cluster = Cluster::start(1);
    let Some(a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let b = Mount::start(&cluster.nameserver, &[]);
    std::fs::write(a.path("f"), b"published").unwrap();
    let mut reader = std::fs::File::open(a.path("f")).unwrap();
    let mut rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.path("g"))
        .or_else(|_| {
            std::fs::write(a.path("g"), b"").unwrap();
            OpenOptions::new().read(true).write(true).open(a.path("g"))
        })
        .unwrap();
    rw.write_all(b"written before unlink").unwrap();

    std::fs::remove_file(a.path("f")).unwrap();
    std::fs::remove_file(a.path("g")).unwrap();
    assert!(!b.path("f").exists());
    assert!(!b.path("g").exists());

    // Reads and writes keep working until the last close.
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "published");
    rw.write_all(b", and after").unwrap();
    rw.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    rw.read_to_string(&mut back).unwrap();
    assert_eq!(back, "written before unlink, and after");
    assert_eq!(rw.metadata().unwrap().nlink(), 0);
    drop(rw);
    drop(reader);
    // Nothing came back to life at close.
    assert!(!a.path("g").exists());
    assert!(!b.path("g").exists());
}

/// What an unprivileged user sees of `trusted.*` on the mount: the kernel refuses the value
/// (ENODATA) and the write (EPERM), and the mount leaves the names out of the list.
#[test]
fn trusted_attributes_are_roots_only() {
    let python = Path::new("/usr/bin/python3");
    let setpriv = Path::new("/usr/bin/setpriv");
    // SAFETY: getuid has no preconditions.
    if !python.exists() || !setpriv.exists() || unsafe { libc::getuid() } != 0 {
        eprintln!("skipping: needs root, /usr/bin/python3 and /usr/bin/setpriv");
        return;
    }
    let cluster = Cluster::start(1);
    let Some(a) = Mount::try_start(
        &cluster.nameserver,
        &["-o", "allow_other,default_permissions"],
    ) else {
        return;
    };
    let f = a.path("f");
    std::fs::write(&f, b"x").unwrap();
    xattr::set(&f, "user.pub", b"public").unwrap();
    xattr::set(&f, "trusted.secret", b"root").unwrap();
    // The test's temp directory is private; let the other user reach the mount.
    let above = a.path("").parent().unwrap().to_owned();
    std::fs::set_permissions(&above, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = r#"
import os, errno, sys
f = sys.argv[1]
def attempt(label, fn):
    try:
        fn()
        print(label, "ok")
    except OSError as e:
        print(label, errno.errorcode[e.errno])
print("list", ",".join(sorted(os.listxattr(f))))
print("user", os.getxattr(f, "user.pub").decode())
attempt("get-trusted", lambda: os.getxattr(f, "trusted.secret"))
attempt("set-trusted", lambda: os.setxattr(f, "trusted.mine", b"1"))
attempt("remove-trusted", lambda: os.removexattr(f, "trusted.secret"))
"#;
    let out = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(python)
        .args(["-c", script])
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "list user.pub",
            "user public",
            "get-trusted ENODATA",
            "set-trusted EPERM",
            "remove-trusted EPERM",
        ]
    );
    assert_eq!(get(&f, "trusted.secret").as_deref(), Some(&b"root"[..]));
    assert_eq!(names(&f), ["trusted.secret", "user.pub"]);
}

/// The kernel asks for `security.capability` before every `write(2)`, and `ls -l` for
/// `security.selinux` of every file: the mount answers both from what it knows of the files'
/// attributes, so neither costs a nameserver request each.
#[test]
fn writes_and_listings_do_not_each_ask_the_nameserver_for_attributes() {
    use dfs_tests::proxy::{DropRule, LossyProxy};
    let cluster = Cluster::start(1);
    let proxy = cluster.block_on(LossyProxy::start(
        &cluster.nameserver,
        DropRule {
            path_prefix: "/none".into(),
            count: 0,
        },
    ));
    // The proxy's URL is not the cluster's: the mount is given the cluster's key by hand.
    let key = dfs_tests::keys::key_file_for(&cluster.nameserver).expect("the cluster's key");
    dfs_tests::keys::register(&proxy.url, &key);
    let Some(a) = Mount::try_start(&proxy.url, &["-o", "attr_timeout=0"]) else {
        return;
    };
    let written = |path: &Path| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        let before = proxy.forwarded();
        for _ in 0..300 {
            file.write_all(b"0123456789").unwrap();
        }
        let during = proxy.forwarded() - before;
        drop(file);
        during
    };
    // A file created here: known to have no attributes. (A few requests of the open itself
    // may still be in flight when counting starts; one per write would be 300.)
    let created = written(&a.path("new"));
    assert!(
        created <= 20,
        "{created} requests during 300 writes of a new file\n{}",
        a.log()
    );
    // An existing file: one listing, remembered for a second (attr_timeout=0 notwithstanding).
    let existing = written(&a.path("new"));
    assert!(
        existing <= 20,
        "{existing} requests during 300 writes of a file"
    );
    assert_eq!(std::fs::read(a.path("new")).unwrap().len(), 3000);

    // `ls -l` asks for `security.selinux` (and the ACLs) of every file: the listing said
    // which files have attributes, so only those cost a request.
    let b = Mount::start(&proxy.url, &[]);
    std::fs::create_dir(a.path("many")).unwrap();
    for i in 0..60 {
        std::fs::write(a.path(&format!("many/f{i}")), b"x").unwrap();
    }
    xattr::set(a.path("many/f7"), "security.label", b"s").unwrap();
    let before = proxy.forwarded();
    let out = dfs_tests::mount::sh(&format!("ls -l {}", b.path("many").display()));
    let listing = proxy.forwarded() - before;
    assert_eq!(out.lines().count(), 61, "{out}");
    assert!(listing <= 15, "{listing} requests for ls -l of 60 files");
    assert_eq!(
        get(&b.path("many/f7"), "security.label").as_deref(),
        Some(&b"s"[..])
    );
}
