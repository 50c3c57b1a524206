//! `dfs keygen` through the built binary, and the keys it makes used with `--key` and
//! `DFS_KEY` against a real cluster: what each role may and may not do from the CLI.

use dfs_proto::auth::{ClientKey, ClusterKey, Role, Verifier};
use dfs_tests::cluster::Cluster;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn dfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(args)
        .env_remove("DFS_KEY")
        .env_remove("RUST_LOG")
        .output()
        .expect("run dfs")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn keygen_makes_cluster_and_client_keys_that_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let out = dfs(&["keygen", "cluster"]);
    assert!(out.status.success(), "{out:?}");
    ClusterKey::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();

    let cluster_file = tmp.path().join("cluster.key");
    let out = dfs(&["keygen", "cluster", "-o", s(&cluster_file)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&cluster_file), 0o600);
    let cluster = ClusterKey::load(&cluster_file).unwrap();
    // Never overwritten: every key made from it would stop working.
    let out = dfs(&["keygen", "cluster", "-o", s(&cluster_file)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(ClusterKey::load(&cluster_file).unwrap(), cluster);

    let verifier = Verifier::new(cluster.clone(), []);
    for (flags, role) in [
        (&[][..], Role::ReadWrite),
        (&["--read-only"][..], Role::ReadOnly),
        (&["--admin"][..], Role::Admin),
    ] {
        let file = tmp.path().join(format!("{role}.key"));
        let mut args = vec![
            "keygen",
            "client",
            "--cluster-key",
            s(&cluster_file),
            "--name",
            "alice",
            "-o",
            s(&file),
        ];
        args.extend(flags);
        let out = dfs(&args);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(mode(&file), 0o600);
        let key = ClientKey::load(&file).unwrap();
        assert_eq!((key.name.as_str(), key.role), ("alice", role));
        // The id to revoke it by is printed.
        assert!(String::from_utf8_lossy(&out.stderr).contains(&key.id));
        let who = verifier
            .authenticate(Some(&key.credential().header_value()))
            .unwrap();
        assert_eq!(who.name(), "alice");
    }

    // Usage errors: exit 2, one line.
    for args in [
        &[
            "keygen",
            "client",
            "--cluster-key",
            s(&cluster_file),
            "--name",
            "a b",
        ][..],
        &[
            "keygen",
            "client",
            "--cluster-key",
            s(&cluster_file),
            "--name",
            "x",
            "--read-only",
            "--admin",
        ],
        &["keygen", "client", "--name", "x"],
    ] {
        let out = dfs(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    // Not a cluster key: exit 1.
    let out = dfs(&[
        "keygen",
        "client",
        "--cluster-key",
        s(&tmp.path().join("ReadWrite.key")),
        "--name",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn the_cli_acts_with_the_role_of_its_key() {
    let cluster = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let key_file = |name: &str, flag: Option<&str>| {
        let file = tmp.path().join(format!("{name}.key"));
        let mut args = vec![
            "keygen",
            "client",
            "--cluster-key",
            s(&cluster.keys.cluster_file),
            "--name",
            name,
            "-o",
            s(&file),
        ];
        args.extend(flag);
        assert!(dfs(&args).status.success());
        file
    };
    let reader = key_file("reader", Some("--read-only"));
    let writer = key_file("writer", None);
    let admin = key_file("admin", Some("--admin"));
    let ns = cluster.nameserver.as_str();

    // No key: refused, and the message says how to get one.
    let out = dfs(&["ls", "/", "--nameserver", ns]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("credential"),
        "{out:?}"
    );

    // Read-only: reads, never writes.
    let out = dfs(&["--key", s(&reader), "ls", "/", "--nameserver", ns]);
    assert!(out.status.success(), "{out:?}");
    let out = dfs(&["--key", s(&reader), "mkdir", "/r", "--nameserver", ns]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read-only"),
        "{out:?}"
    );

    // Read-write, through DFS_KEY: writes, but not the cluster's settings.
    let with_env = |key: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dfs"))
            .args(args)
            .args(["--nameserver", ns])
            .env("DFS_KEY", key)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    assert!(with_env(&writer, &["mkdir", "/w"]).status.success());
    let out = with_env(&writer, &["map", "set", "/w", "--replication", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin"),
        "{out:?}"
    );

    // Admin: the admin commands work.
    let out = with_env(&admin, &["map", "set", "/w", "--replication", "1"]);
    assert!(out.status.success(), "{out:?}");
    for args in [&["status"][..], &["fileservers", "--json"], &["locks"]] {
        let out = with_env(&admin, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    // Blob counts come from the fileservers' listings, which an admin key may read.
    let out = with_env(&admin, &["fileservers", "--json"]);
    let lines: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(lines[0]["blobs"].is_u64(), "{lines}");
    // A key that does not exist is one clear error.
    let out = dfs(&["--key", "/nonexistent.key", "ls", "/", "--nameserver", ns]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.key"));
}

#[test]
fn locks_break_frees_another_writers_lease_for_admin_keys_only() {
    use dfs_proto::locks::AcquireRequest;
    let cluster = Cluster::start(1);
    let ns = cluster.nameserver.as_str();
    let writer = cluster.key_file("writer", Role::ReadWrite);
    let admin = cluster.key_file("admin", Role::Admin);
    // A writer's lease, as a mount or `dfs put` would hold it.
    let locks = cluster.locks();
    let lease = cluster.block_on(async {
        locks
            .acquire(&AcquireRequest {
                paths: vec![dfs_proto::DfsPath::parse("/stuck").unwrap()],
                client: "stuck-writer".into(),
                ttl_ms: Some(60_000),
            })
            .await
            .unwrap()
    });
    let listed = |key: &Path| {
        let out = dfs(&["--key", s(key), "locks", "--nameserver", ns]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).contains("/stuck")
    };
    assert!(listed(&admin));

    // Another read-write key may not break it.
    let out = dfs(&[
        "--key",
        s(&writer),
        "locks",
        "break",
        "/stuck",
        "--nameserver",
        ns,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin"),
        "{out:?}"
    );
    assert!(listed(&admin));

    // An admin key may, by path or by token; the holder's next renew fails.
    let out = dfs(&[
        "--key",
        s(&admin),
        "locks",
        "break",
        "/stuck",
        "--nameserver",
        ns,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("broke lease {}", lease.token)),
        "{out:?}"
    );
    assert!(!listed(&admin));
    cluster.block_on(async {
        let err = locks.renew(lease.token, "stuck-writer").await.unwrap_err();
        assert_eq!(err.code, dfs_proto::ErrorCode::LeaseExpired, "{err}");
    });
    // Nothing left to break: a clear error, exit 1; a bad path is a usage error, exit 2.
    let token = lease.token.to_string();
    let out = dfs(&[
        "--key",
        s(&admin),
        "locks",
        "break",
        &token,
        "--nameserver",
        ns,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = dfs(&[
        "--key",
        s(&admin),
        "locks",
        "break",
        "rel/path",
        "--nameserver",
        ns,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
