//! The lease attacks of issue 12 against a real cluster (nameserver, lockserver, fileservers)
//! with two read-write keys: a token alone (forged, borrowed, or any very high one) opens
//! and publishes nothing, another key's lease cannot be renewed or given back, and a file
//! another key is writing cannot be removed, renamed or changed, its attributes or extended
//! attributes included (`EBUSY`) except by an admin,
//! through the client library and through two real mounts. The honest writer loses nothing.

use dfs_proto::auth::Role;
use dfs_proto::client::{LockClient, NameClient};
use dfs_proto::names::OpenWriteRequest;
use dfs_proto::xattr::SetMode;
use dfs_proto::{DfsPath, ErrorCode};
use dfs_tests::cluster::Cluster;
use dfs_tests::mount::{sh_status, Mount};
use std::io::ErrorKind;
use tokio::io::AsyncWriteExt;

fn p(path: &str) -> DfsPath {
    DfsPath::parse(path).unwrap()
}

/// The client library with another key of `role`, named `name`.
fn client_as(cluster: &Cluster, name: &str, role: Role) -> dfs_client::Client {
    dfs_client::Client::with_key(&cluster.nameserver, cluster.keys.issue(name, role))
}

#[test]
fn a_token_alone_opens_nothing_and_the_honest_writer_is_not_fenced() {
    let cluster = Cluster::start(1);
    cluster.block_on(async {
        let alice = cluster.client_at(&cluster.nameserver);
        alice.write("/f", b"alice v1").await.unwrap();
        // Alice writes again and holds her lease while mallory tries.
        let mut open = alice.create("/f").await.unwrap();
        open.write_all(b"alice v2").await.unwrap();

        let mallory_key = cluster.keys.issue("mallory", Role::ReadWrite);
        let mallory =
            NameClient::new(&cluster.nameserver).with_credential(mallory_key.credential());
        let locks = LockClient::new(&cluster.lockserver).with_credential(mallory_key.credential());
        let alices = cluster.locks().list().await.unwrap().leases;
        let alices = alices.into_iter().find(|l| l.paths == [p("/f")]).unwrap();
        let open_write = |token: u64, lease| OpenWriteRequest {
            path: p("/f"),
            token,
            create: None,
            exclusive: false,
            exclude: Vec::new(),
            owner: None,
            lease,
        };
        // Any token without a lease: the 2^64-1 that used to fence the file for ever.
        let err = mallory
            .open_write(&open_write(u64::MAX, None))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
        // Alice's lease as `GET /v1/locks` shows it (no signature), or with its token raised.
        let err = mallory
            .open_write(&open_write(alices.token, Some(alices.clone())))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
        // Mallory's own signed lease on another path, presented for /f.
        let own = locks
            .acquire(&dfs_proto::locks::AcquireRequest {
                paths: vec![p("/elsewhere")],
                client: "mallory".into(),
                ttl_ms: None,
            })
            .await
            .unwrap();
        let err = mallory
            .open_write(&open_write(own.token, Some(own.clone())))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
        assert!(err.message.contains("does not cover"), "{err}");
        let mut raised = own.clone();
        raised.token = u64::MAX;
        let err = mallory
            .open_write(&open_write(u64::MAX, Some(raised)))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "{err}");

        // Alice's lease cannot be renewed or given back by mallory, though its session
        // name is public.
        let err = locks.renew(alices.token, &alices.client).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
        let err = locks
            .release(alices.token, &alices.client)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "{err}");

        // Alice publishes as if nothing happened: not fenced, nothing lost.
        open.close().await.unwrap();
        assert_eq!(alice.read("/f").await.unwrap(), b"alice v2");
        alice.write("/f", b"alice v3").await.unwrap();
        assert_eq!(alice.read("/f").await.unwrap(), b"alice v3");
    });
}

#[test]
fn a_file_another_key_writes_is_busy_except_for_an_admin() {
    let cluster = Cluster::start(1);
    cluster.block_on(async {
        let alice = cluster.client_at(&cluster.nameserver);
        let bob = client_as(&cluster, "bob", Role::ReadWrite);
        let root = client_as(&cluster, "root", Role::Admin);
        alice.write("/doc", b"draft").await.unwrap();
        alice.write("/other", b"x").await.unwrap();
        alice
            .set_xattr("/doc", "user.tag", b"a", SetMode::Any)
            .await
            .unwrap();
        let mut open = alice.create("/doc").await.unwrap();
        open.write_all(b"final").await.unwrap();

        for err in [
            bob.remove_file("/doc").await.unwrap_err(),
            bob.rename("/doc", "/moved").await.unwrap_err(),
            bob.rename("/other", "/doc").await.unwrap_err(),
            bob.set_mode("/doc", 0o600).await.unwrap_err(),
            bob.set_xattr("/doc", "user.tag", b"b", SetMode::Any)
                .await
                .unwrap_err(),
            bob.remove_xattr("/doc", "user.tag").await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::ResourceBusy, "{err}");
        }
        // Nothing bob tried changed the file's attributes; reading them is not refused.
        assert_eq!(bob.get_xattr("/doc", "user.tag").await.unwrap(), b"a");
        // Alice's own key may (another of her sessions, as the mount's own rm does).
        alice.set_mode("/doc", 0o640).await.unwrap();
        alice
            .set_xattr("/doc", "user.tag", b"c", SetMode::Any)
            .await
            .unwrap();
        // An admin may, and the writer's publish then follows the file.
        root.rename("/doc", "/doc-admin").await.unwrap();
        open.close().await.unwrap();
        assert_eq!(alice.read("/doc-admin").await.unwrap(), b"final");
        // Once the lease is given back (close), nobody is refused.
        bob.rename("/doc-admin", "/doc-bob").await.unwrap();
        bob.remove_file("/doc-bob").await.unwrap();
    });
}

#[test]
fn rm_on_a_second_mount_with_another_key_gets_ebusy_while_the_first_writes() {
    let cluster = Cluster::start(1);
    let bob_key = cluster.key_file("bob", Role::ReadWrite);
    let Some(a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let bob_key = bob_key.to_str().unwrap().to_owned();
    let Some(b) = Mount::try_start(&cluster.nameserver, &["--key", &bob_key]) else {
        return;
    };
    // Made elsewhere, so that mount A opens it fresh (no write state of its own lingering).
    cluster.block_on(async {
        let client = cluster.client_at(&cluster.nameserver);
        client.write("/held", b"v1").await.unwrap();
    });
    // A program on mount A keeps the file open for writing: its lease lives from the open
    // to the first flush (close) of a descriptor. It runs in a process of its own (a
    // descriptor of this test process would be flushed by every child it starts), and it is
    // python, which does not duplicate the descriptor as `sh`'s `exec 3>` does.
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, time\n\
             f = open(sys.argv[1], 'a')\n\
             f.write('v2\\n')\n\
             f.flush()\n\
             time.sleep(30)\n",
        )
        .arg(a.path("held"))
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cluster
        .block_on(cluster.locks().list())
        .unwrap()
        .leases
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer took no lease: {}",
            a.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (ok, out) = sh_status(&format!("rm {}", b.path("held").display()));
    assert!(!ok, "{out}");
    assert!(out.contains("busy"), "{out}");
    let (ok, out) = sh_status(&format!(
        "mv {} {}",
        b.path("held").display(),
        b.path("gone").display()
    ));
    assert!(!ok, "{out}");
    // Its extended attributes too (setfattr comes with attr, which scripts/test installs).
    let (ok, out) = sh_status(&format!(
        "setfattr -n user.tag -v b {}",
        b.path("held").display()
    ));
    assert!(!ok, "{out}");
    assert!(out.contains("busy"), "{out}");
    // Closed: published, the lease given back, and B may remove it.
    writer.kill().unwrap();
    writer.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cluster
        .block_on(cluster.locks().list())
        .unwrap()
        .leases
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease was not given back"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(a.path("held")).unwrap(), b"v1v2\n");
    let (ok, out) = sh_status(&format!("rm {}", b.path("held").display()));
    assert!(ok, "{out}");
}
