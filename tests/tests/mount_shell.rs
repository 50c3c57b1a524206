//! Shell tools through a real mount: cp/cmp of a large file, cat, mv, rm, mkdir -p, ls -l,
//! tar -x of a real source tree + diff -r, appending with >>, truncating with `: >`.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::{sh, sh_status, Mount};

fn q(p: &std::path::Path) -> String {
    format!("'{}'", p.display())
}

/// The default mount options (the plain path).
#[test]
fn shell_tools_work_through_the_mount() {
    shell_tools(&[]);
}

/// Passthrough switched off explicitly (same as the default).
#[test]
fn shell_tools_work_through_the_mount_without_passthrough() {
    shell_tools(&["-o", "nopassthrough"]);
}

/// Passthrough asked for explicitly, and a rewrite of the same size detected at close.
#[test]
fn shell_tools_work_through_the_mount_with_passthrough() {
    shell_tools(&["-o", "passthrough"]);
}

fn shell_tools(extra: &[&str]) {
    let cluster = Cluster::start(2);
    let Some(mount) = Mount::try_start(&cluster.nameserver, extra) else {
        return;
    };
    let m = q(&mount.dir);
    let work = tempfile::tempdir().unwrap();
    let w = q(work.path());

    // cp a large file in and cmp it back.
    sh(&format!(
        "head -c 67108864 /dev/urandom > {w}/big && cp {w}/big {m}/big && cmp {w}/big {m}/big"
    ));
    let ls = sh(&format!("ls -l {m}"));
    assert!(ls.contains("67108864"), "ls -l shows the size: {ls}");

    // cat, >> and : >
    sh(&format!("echo hello > {m}/a.txt"));
    assert_eq!(sh(&format!("cat {m}/a.txt")), "hello\n");
    sh(&format!("echo world >> {m}/a.txt"));
    assert_eq!(sh(&format!("cat {m}/a.txt")), "hello\nworld\n");
    sh(&format!(": > {m}/a.txt"));
    assert_eq!(sh(&format!("cat {m}/a.txt")), "");
    assert_eq!(sh(&format!("stat -c %s {m}/a.txt")).trim(), "0");
    sh(&format!("printf abc >> {m}/a.txt"));
    assert_eq!(sh(&format!("cat {m}/a.txt")), "abc");

    // Same-size rewrites through a fresh handle are published (passthrough writes bypass
    // the daemon; close must still notice them), and a read-only open changes nothing.
    sh(&format!(
        "printf xyz > {m}/same.txt && printf XYZ > {m}/same.txt"
    ));
    assert_eq!(sh(&format!("cat {m}/same.txt")), "XYZ");
    sh(&format!(
        "printf QRS | dd of={m}/same.txt conv=notrunc status=none"
    ));
    assert_eq!(sh(&format!("cat {m}/same.txt")), "QRS");
    let mount2 = Mount::start(&cluster.nameserver, extra);
    assert_eq!(
        sh(&format!("cat {}", q(&mount2.path("same.txt")))),
        "QRS",
        "another mount sees the published rewrite"
    );
    sh(&format!("rm {m}/same.txt"));

    // mkdir -p, mv, rm
    sh(&format!(
        "mkdir -p {m}/x/y/z && mv {m}/a.txt {m}/x/y/z/b.txt"
    ));
    assert_eq!(sh(&format!("cat {m}/x/y/z/b.txt")), "abc");
    assert!(!mount.path("a.txt").exists());
    sh(&format!("mv {m}/x/y {m}/moved"));
    assert_eq!(sh(&format!("cat {m}/moved/z/b.txt")), "abc");
    sh(&format!("rm {m}/moved/z/b.txt"));
    let (ok, _) = sh_status(&format!("rmdir {m}/x"));
    assert!(ok, "rmdir of the emptied dir works");
    let (ok, err) = sh_status(&format!("rmdir {m}/moved"));
    assert!(!ok && err.contains("not empty"), "{err}");
    sh(&format!("rm -r {m}/moved {m}/big"));
    assert_eq!(sh(&format!("ls -A {m}")), "");

    // tar -x of a real source tree, diff -r against the original.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("dfs-proto");
    sh(&format!(
        "tar -C {} -cf {w}/src.tar dfs-proto && mkdir {m}/t && tar -C {m}/t -xf {w}/src.tar && diff -r {} {m}/t/dfs-proto",
        q(src.parent().unwrap()),
        q(&src)
    ));
}
