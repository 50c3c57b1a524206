//! The `dfs` command line without FUSE: usage errors are one line and exit 2, failures one
//! line and exit 1. (Also makes `cargo test --workspace` build `dfs` for `tests/`.)

use std::process::{Command, Output};

fn dfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(args)
        .output()
        .expect("run dfs")
}

fn one_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("dfs: "), "{err:?}");
    err
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        &["bogus"][..],
        &["mount", "not-a-url", "/nonexistent"],
        &["mount", "http://127.0.0.1:1"],
        &[
            "mount",
            "http://127.0.0.1:1",
            "/nonexistent",
            "-o",
            "no_such_option",
        ],
        &["up", "/nonexistent-dfs-mnt", "--fileservers", "0"],
        &["up", "/nonexistent-dfs-mnt", "--", "-o", "no_such_option"],
    ] {
        let out = dfs(args);
        assert_eq!(out.status.code(), Some(2), "dfs {args:?}: {out:?}");
        one_line(&out);
    }
}

#[test]
fn help_and_version_exit_0() {
    let out = dfs(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("dfs "));
    let out = dfs(&["mount", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("-o <OPTS>"));
}

#[test]
fn an_unreachable_cluster_fails_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let out = dfs(&[
        "mount",
        "http://127.0.0.1:1",
        tmp.path().to_str().unwrap(),
        "-f",
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = one_line(&out);
    assert!(err.contains("cannot reach the nameserver"), "{err}");
}
