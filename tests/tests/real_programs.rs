//! Everyday programs on a real mount, their result read back through a second mount of the
//! same cluster: `tar -xp`, `cp -a` and `rsync -aH` of a tree with symlinks, hard links and
//! files of two owners (type, mode, owner, link count, link target, mtime and content
//! compared with the source), `python3 -m venv` (and the `isatty` ioctl Python sends),
//! `git clone` of a repository with a symlink, and `setfattr`/`getfattr`. The tests run as
//! root (as CI does), so that the programs keep owners.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::{sh, sh_status, Mount};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Whether `program` is on PATH; a test whose program is missing says so and skips, or
/// fails where nothing may skip (`DFS_REQUIRE_CONFORMANCE=1`, as in CI).
fn have(program: &str) -> bool {
    let found = sh_status(&format!("command -v {program}")).0;
    if !found {
        assert!(
            std::env::var("DFS_REQUIRE_CONFORMANCE").as_deref() != Ok("1"),
            "{program} is not installed (scripts/test installs it)"
        );
        eprintln!("skipping: {program} is not installed");
    }
    found
}

/// Two mounts of one cluster: the programs run on the first, the results are read through
/// the second (its own kernel caches, its own downloads).
fn two_mounts() -> Option<(Cluster, Mount, Mount)> {
    if !is_root() {
        eprintln!("skipping: the real-program tests keep owners, which needs root");
        return None;
    }
    let cluster = Cluster::start(2);
    let a = Mount::try_start(&cluster.nameserver, &[])?;
    let b = Mount::try_start(&cluster.nameserver, &[])?;
    Some((cluster, a, b))
}

/// A source tree on the local disk, under `parent/R`: two owners, modes, a large file, an
/// executable, a relative symlink, a hard link pair, an empty 0700 directory, and every
/// mtime (directories last) set to a fixed past time.
fn make_tree(parent: &Path) -> PathBuf {
    let root = parent.join("R");
    sh(&format!(
        "set -e; R={r}
         mkdir -p \"$R/docs\" \"$R/bin\" \"$R/empty\"
         printf 'hello\\n' > \"$R/docs/readme.txt\"
         head -c 300000 /dev/urandom > \"$R/bin/blob\"
         printf '#!/bin/sh\\necho hi\\n' > \"$R/bin/run.sh\"; chmod 755 \"$R/bin/run.sh\"
         printf 'x' > \"$R/docs/secret\"; chown 65534:65534 \"$R/docs/secret\"
         chmod 600 \"$R/docs/secret\"
         ln \"$R/docs/readme.txt\" \"$R/docs/hard\"
         ln -s docs/readme.txt \"$R/link\"
         chmod 700 \"$R/empty\"; chown 65534:0 \"$R/empty\"
         touch -h -d @1600000000 \"$R/link\"
         find \"$R\" -depth ! -type l -exec touch -d @1600000000 {{}} +",
        r = q(&root)
    ));
    root
}

/// What the tests compare of one entry: the metadata programs are asked to keep.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime: i64,
    target: Option<PathBuf>,
    content: Option<Vec<u8>>,
}

/// Every entry under `root` (not `root` itself), by path relative to it.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut seen = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "file"
            };
            seen.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                Seen {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    nlink: meta.nlink(),
                    mtime: meta.mtime(),
                    target: ft.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
                    content: ft.is_file().then(|| std::fs::read(&path).unwrap()),
                },
            );
        }
    }
    seen
}

/// Asserts that `copy` (read through the second mount) has what `source` has, entry by
/// entry, and that the hard link pair is one file there too.
fn assert_same_tree(source: &Path, copy: &Path) {
    // The second mount's kernel may hold attributes for attr_timeout (1 s).
    std::thread::sleep(Duration::from_millis(1100));
    let (want, got) = (snapshot(source), snapshot(copy));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the same names"
    );
    for (path, w) in &want {
        assert_eq!(Some(w), got.get(path), "{}", path.display());
    }
    let ino = |p: &str| std::fs::metadata(copy.join(p)).unwrap().ino();
    assert_eq!(ino("docs/readme.txt"), ino("docs/hard"), "hard links kept");
}

#[test]
fn tar_extracts_owners_modes_links_and_times() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    let local = tempfile::tempdir().unwrap();
    let source = make_tree(local.path());
    let archive = local.path().join("tree.tar");
    sh(&format!("tar -cf {} -C {} R", q(&archive), q(local.path())));
    sh(&format!(
        "mkdir {x} && tar -xpf {} -C {x}",
        q(&archive),
        x = q(&a.path("x"))
    ));
    assert_same_tree(&source, &b.path("x/R"));
    // And back: an archive made on the mount extracts to the same tree on local disk.
    let again = local.path().join("again");
    sh(&format!(
        "mkdir {o} && tar -cf - -C {} R | tar -xpf - -C {o}",
        q(&b.path("x")),
        o = q(&again)
    ));
    assert_same_tree(&source, &again.join("R"));
}

#[test]
fn cp_archive_mode_keeps_everything() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    let local = tempfile::tempdir().unwrap();
    let source = make_tree(local.path());
    sh(&format!("cp -a {} {}", q(&source), q(&a.path("copy"))));
    assert_same_tree(&source, &b.path("copy"));
}

#[test]
fn rsync_keeps_hard_links_and_a_second_run_has_nothing_to_do() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    if !have("rsync") {
        return;
    }
    let local = tempfile::tempdir().unwrap();
    let source = make_tree(local.path());
    let dest = a.path("rs");
    sh(&format!("rsync -aH {}/ {}/", q(&source), q(&dest)));
    assert_same_tree(&source, &b.path("rs"));
    // Everything rsync compares (size, mtime, mode, owner, links) reads back as written.
    let changes = sh(&format!(
        "rsync -aHn --itemize-changes {}/ {}/",
        q(&source),
        q(&dest)
    ));
    assert_eq!(changes.trim(), "", "a second rsync finds nothing to do");
}

#[test]
fn python_venv_is_created_and_runs_from_another_mount() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    if !have("python3") {
        return;
    }
    sh(&format!(
        "python3 -m venv --without-pip {}",
        q(&a.path("venv"))
    ));
    std::thread::sleep(Duration::from_millis(1100));
    let venv = b.path("venv");
    assert!(std::fs::symlink_metadata(venv.join("bin/python"))
        .unwrap()
        .file_type()
        .is_symlink());
    let prefix = sh(&format!(
        "{}/bin/python -c 'import sys; print(sys.prefix)'",
        q(&venv)
    ));
    assert_eq!(prefix.trim(), venv.display().to_string());
    // The venv is usable for writing too: a module placed in it is importable.
    let site = sh(&format!(
        "{}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'",
        q(&venv)
    ));
    std::fs::write(Path::new(site.trim()).join("dfs_probe.py"), "ANSWER = 42\n").unwrap();
    let answer = sh(&format!(
        "{}/bin/python -c 'import dfs_probe; print(dfs_probe.ANSWER)'",
        q(&a.path("venv"))
    ));
    assert_eq!(answer.trim(), "42");
    // Python asks `isatty` of every file it opens: an ioctl the mount answers ENOTTY, as a
    // local file does, and quietly.
    let tty = sh(&format!(
        "python3 -c 'import errno, fcntl, sys, termios
f = open(sys.argv[1], \"rb\")
try:
    fcntl.ioctl(f, termios.TCGETS, bytes(64))
    print(\"answered\")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), f.isatty())' {}",
        q(&a.path("venv/pyvenv.cfg"))
    ));
    assert_eq!(tty.trim(), "ENOTTY False");
    assert!(
        !a.log().contains("Not Implemented"),
        "no warning per open in the mount's log:\n{}",
        a.log()
    );
}

#[test]
fn git_clone_with_a_symlink_is_clean_from_another_mount() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    let local = tempfile::tempdir().unwrap();
    let repo = local.path().join("repo");
    sh(&format!(
        "set -e; mkdir {r}; cd {r}; git init -q -b main .
         git config user.email t@example.org; git config user.name t
         mkdir src; printf 'fn main() {{}}\\n' > src/main.rs
         printf '#!/bin/sh\\n' > run.sh; chmod 755 run.sh
         ln -s src/main.rs entry.rs
         git add -A; git commit -q -m one
         printf '// two\\n' >> src/main.rs; git commit -q -am two",
        r = q(&repo)
    ));
    sh(&format!(
        "git clone -q {} {}",
        q(&repo),
        q(&a.path("clone"))
    ));
    std::thread::sleep(Duration::from_millis(1100));
    let clone = b.path("clone");
    let git = |args: &str| {
        sh(&format!(
            "git -c safe.directory='*' -C {} {args}",
            q(&clone)
        ))
    };
    assert_eq!(git("status --porcelain").trim(), "", "a clean work tree");
    git("fsck --strict");
    assert_eq!(git("rev-list --count HEAD").trim(), "2");
    assert_eq!(
        std::fs::read_link(clone.join("entry.rs")).unwrap(),
        Path::new("src/main.rs")
    );
    let mode = std::fs::metadata(clone.join("run.sh")).unwrap().mode();
    assert_eq!(mode & 0o111, 0o111, "the executable bit is kept");
    // Work in the clone through the second mount: a commit there is seen by the first.
    git("-c user.email=t@example.org -c user.name=t commit -q --allow-empty -m three");
    std::thread::sleep(Duration::from_millis(1100));
    let count = sh(&format!(
        "git -c safe.directory='*' -C {} rev-list --count HEAD",
        q(&a.path("clone"))
    ));
    assert_eq!(count.trim(), "3");
}

#[test]
fn setfattr_and_getfattr_across_mounts() {
    let Some((_cluster, a, b)) = two_mounts() else {
        return;
    };
    if !have("setfattr") || !have("getfattr") {
        return;
    }
    let file = a.path("tagged");
    std::fs::write(&file, b"x").unwrap();
    sh(&format!("setfattr -n user.colour -v blue {}", q(&file)));
    sh(&format!("setfattr -n user.size -v 0x0a0b {}", q(&file)));
    std::thread::sleep(Duration::from_millis(1100));
    let other = b.path("tagged");
    let value = sh(&format!(
        "getfattr --only-values -n user.colour {}",
        q(&other)
    ));
    assert_eq!(value, "blue");
    let dump = sh(&format!("getfattr -d -e hex {}", q(&other)));
    assert!(dump.contains("user.colour=0x626c7565"), "{dump}");
    assert!(dump.contains("user.size=0x0a0b"), "{dump}");
    sh(&format!("setfattr -x user.colour {}", q(&other)));
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, out) = sh_status(&format!("getfattr -n user.colour {}", q(&file)));
    assert!(!ok && out.contains("No such attribute"), "{out}");
}
