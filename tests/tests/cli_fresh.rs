//! The first hour: `dfs up` from a lone `dfs` binary (no `dfs-fuse` beside it or on `PATH`),
//! `dfs mount URL DIR`, the mount's type `fuse.dfs` in `/proc/mounts` (also for `dfs-fuse`),
//! and `dfs`/`dfs-fuse` started as mount(8)'s helper `mount.fuse.dfs`.
//!
//! The binaries come from `target/<profile>/` (`cargo test --workspace` builds `dfs` because
//! dfs-cli has tests of its own; alone: `cargo build -p dfs-cli -p dfs-fuse` first).

use dfs_proto::client::NameClient;
use dfs_tests::cluster::Cluster;
use dfs_tests::mount::{fs_type, fuse_unavailable, is_mounted, skip_fuse, Mount};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `PATH` with the system's tools (fusermount3, umount) and no DFS binary.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lazily detaches a mount a failed test left behind.
fn detach(dir: &Path) {
    if is_mounted(dir) {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

/// Spawns `command`, trying again while its binary is "busy": a binary this test process just
/// copied can still be open for writing in a child another test thread forked meanwhile (the
/// descriptor lives until that child's exec), and exec then fails with `ETXTBSY`.
fn spawn_when_not_busy(command: &mut Command) -> Child {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match command.spawn() {
            Err(err)
                if err.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.expect("start dfs up"),
        }
    }
}

/// `dfs up` running from a temp dir; dropping it kills the process and detaches the mount.
struct Up {
    child: Child,
    mnt: PathBuf,
    log: PathBuf,
}

impl Up {
    /// Starts `dfs up MNT --data DATA --listen 127.0.0.1:0` from `bin` with [`SYSTEM_PATH`]
    /// and returns once the mount appears in `/proc/self/mountinfo`.
    fn start(bin: &Path, root: &Path, log: &str) -> Up {
        Up::start_with(bin, root, log, &[])
    }

    /// [`Up::start`] with more options of `dfs up` (e.g. `--tls`).
    fn start_with(bin: &Path, root: &Path, log: &str, extra: &[&str]) -> Up {
        let mnt = root.join("mnt");
        let log = root.join(log);
        let mut command = Command::new(bin);
        command
            .arg("up")
            .arg(&mnt)
            .arg("--data")
            .arg(root.join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(root)
            .env("PATH", SYSTEM_PATH)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log"));
        let child = spawn_when_not_busy(&mut command);
        let mut up = Up { child, mnt, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mounted(&up.mnt) {
            if let Ok(Some(status)) = up.child.try_wait() {
                panic!("dfs up exited before mounting ({status}):\n{}", up.log());
            }
            assert!(
                Instant::now() < deadline,
                "dfs up did not mount within 60 s:\n{}",
                up.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The nameserver URL from the `dfs: mounted ... (nameserver URL, ...)` line.
    fn nameserver(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if let Some(at) = log.find("(nameserver ") {
                let rest = &log[at + "(nameserver ".len()..];
                let end = rest.find(',').expect("a comma after the URL");
                return rest[..end].to_owned();
            }
            assert!(Instant::now() < deadline, "no `mounted` line:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT (Ctrl-C) and wait for the process; returns its status.
    fn interrupt(&mut self) -> ExitStatus {
        dfs_tests::process::signal(self.child.id(), libc::SIGINT);
        wait_exit(&mut self.child, Duration::from_secs(90))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        detach(&self.mnt);
        if std::thread::panicking() {
            eprintln!("--- dfs up log ---\n{}", self.log());
        }
    }
}

#[test]
fn dfs_up_works_from_a_lone_dfs_binary() {
    if !fuse_ok() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("dfs-up-")
        .tempdir()
        .expect("a temp dir");
    let root = tmp.path();
    // Only `dfs` in its directory, and no dfs-fuse on PATH: the mount must be in-process.
    let bin_dir = root.join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let bin = bin_dir.join("dfs");
    std::fs::copy(dfs_tests::bin_path("dfs"), &bin).expect("copy dfs");
    for dir in std::env::split_paths(SYSTEM_PATH).chain([bin_dir.clone()]) {
        assert!(
            !dir.join("dfs-fuse").exists(),
            "{} has a dfs-fuse: the test would not prove anything",
            dir.display()
        );
    }

    let mut up = Up::start(&bin, root, "up.log");
    assert_eq!(fs_type(&up.mnt).as_deref(), Some("fuse.dfs"));
    let file = up.mnt.join("hello.txt");
    std::fs::write(&file, b"hello from dfs up\n").expect("write through the mount");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello from dfs up\n");
    std::fs::create_dir(up.mnt.join("dir")).unwrap();
    std::fs::write(up.mnt.join("dir/b"), vec![7u8; 300_000]).unwrap();
    assert_eq!(std::fs::read(up.mnt.join("dir/b")).unwrap().len(), 300_000);

    // Three fileservers, replication 2: one of them may be down.
    let url = up.nameserver();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Authentication is on: `dfs up` made its keys in the data directory, owner-only.
    let data = root.join("data");
    for name in ["cluster.key", "admin.key", "user.key"] {
        let mode = std::fs::metadata(data.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let anonymous = runtime.block_on(NameClient::new(&url).cluster());
    assert_eq!(
        anonymous.unwrap_err().code,
        dfs_proto::ErrorCode::Unauthenticated
    );
    assert!(up.log().contains("DFS_KEY="), "{}", up.log());
    let admin = dfs_proto::auth::ClientKey::load(&data.join("admin.key")).unwrap();
    let cluster = runtime
        .block_on(
            NameClient::new(&url)
                .with_credential(admin.credential())
                .cluster(),
        )
        .expect("the nameserver answers");
    let alive = cluster.fileservers.iter().filter(|f| f.alive).count();
    assert_eq!(alive, 3, "{cluster:?}");

    let status = up.interrupt();
    assert!(
        status.success(),
        "dfs up after SIGINT: {status}\n{}",
        up.log()
    );
    assert!(!is_mounted(&up.mnt), "Ctrl-C unmounts");
    let log = up.log();
    assert!(log.contains("dfs: stopped"), "{log}");
    assert!(nothing_listens(&url), "the servers stopped with the mount");
    drop(up);

    // Same data directory again: the file is still there.
    let mut again = Up::start(&bin, root, "up2.log");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello from dfs up\n");
    assert!(again.interrupt().success(), "{}", again.log());
    assert!(!is_mounted(&again.mnt));
}

/// Whether nothing listens on the `http(s)://host:port` of `url` any more.
fn nothing_listens(url: &str) -> bool {
    let addr = url.split("://").nth(1).unwrap_or(url);
    std::net::TcpStream::connect(addr).is_err()
}

#[test]
fn dfs_up_tls_runs_the_cluster_and_the_mount_over_https() {
    if !fuse_ok() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("dfs-up-tls-")
        .tempdir()
        .expect("a temp dir");
    let root = tmp.path();
    let bin = dfs_tests::bin_path("dfs");
    let mut up = Up::start_with(&bin, root, "up.log", &["--tls"]);
    let url = up.nameserver();
    assert!(url.starts_with("https://"), "{url}");
    let ca = root.join("data/tls/ca.pem");
    assert!(ca.exists(), "dfs up --tls keeps its CA in DATA/tls");

    let content = b"over https, end to end\n".repeat(1000);
    std::fs::write(up.mnt.join("tls.txt"), &content).expect("write through the mount");
    assert_eq!(std::fs::read(up.mnt.join("tls.txt")).unwrap(), content);

    // Every server registered and answers over https; a client with the CA reads the file.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key_file = root.join("data/user.key");
    let key = dfs_proto::auth::ClientKey::load(&key_file).expect("dfs up made a user key");
    let client = dfs_client::Client::builder(&url)
        .ca(&ca)
        .unwrap()
        .key(key.clone())
        .build();
    assert_eq!(runtime.block_on(client.read("/tls.txt")).unwrap(), content);
    let http = dfs_proto::tls::TlsConfig::with_ca(&ca)
        .http_client()
        .unwrap();
    let info = runtime
        .block_on(
            NameClient::with_http(&url, http)
                .with_credential(key.credential())
                .cluster(),
        )
        .unwrap();
    assert!(info
        .fileservers
        .iter()
        .all(|f| f.url.starts_with("https://") && f.alive));

    // `dfs cat --ca` reads it; without the CA the CLI says what is wrong.
    let cat = |extra: &[&str]| {
        Command::new(&bin)
            .args(["cat", "/tls.txt", "--nameserver", &url])
            .args(extra)
            .env("DFS_KEY", &key_file)
            .env_remove("DFS_CA")
            .output()
            .unwrap()
    };
    let out = cat(&["--ca", ca.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, content);
    let out = cat(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate") && err.contains("--ca"), "{err}");

    // A second mount joins with `-o ca=`; without it the mount refuses, saying why.
    let (mnt2, cache2) = (root.join("mnt2"), root.join("cache2"));
    std::fs::create_dir(&mnt2).unwrap();
    let out = Command::new(&bin)
        .arg("mount")
        .arg(&url)
        .arg(&mnt2)
        .arg("-o")
        .arg(format!("cache_dir={}", cache2.display()))
        .env("PATH", SYSTEM_PATH)
        .env_remove("DFS_CA")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    assert!(!is_mounted(&mnt2));
    let out = Command::new(&bin)
        .arg("mount")
        .arg(&url)
        .arg(&mnt2)
        .arg("-o")
        .arg(format!(
            "ca={},cache_dir={},key={}",
            ca.display(),
            cache2.display(),
            key_file.display()
        ))
        .env("PATH", SYSTEM_PATH)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(mnt2.join("tls.txt")).unwrap(), content);
    assert!(Command::new("umount")
        .arg(&mnt2)
        .status()
        .unwrap()
        .success());
    wait_until("the unmount", Duration::from_secs(20), || {
        !is_mounted(&mnt2)
    });

    assert!(up.interrupt().success(), "{}", up.log());
    assert!(nothing_listens(&url));
}

#[test]
fn dfs_mount_mounts_a_cluster_as_fuse_dfs() {
    if !fuse_ok() {
        return;
    }
    let cluster = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let (mnt, cache) = (tmp.path().join("mnt"), tmp.path().join("cache"));
    std::fs::create_dir(&mnt).unwrap();
    // Daemonises and returns once usable; .output() also proves the daemon let go of the
    // pipes.
    let out = Command::new(dfs_tests::bin_path("dfs"))
        .arg("mount")
        .arg(&cluster.nameserver)
        .arg(&mnt)
        .arg("-o")
        .arg(format!("cache_dir={},lock_wait=1", cache.display()))
        .arg("--key")
        .arg(&cluster.keys.client_file)
        .env("PATH", SYSTEM_PATH)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(&mnt), "usable when the command returns");
    assert_eq!(fs_type(&mnt).as_deref(), Some("fuse.dfs"));
    std::fs::write(mnt.join("a"), b"via dfs mount").unwrap();
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"via dfs mount");
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_until("the unmount", Duration::from_secs(20), || !is_mounted(&mnt));

    // Type fuse.dfs without a mount.fuse.dfs helper: mount.fuse3 runs `dfs URL DIR -o OPTS`
    // (named here in its `PROGRAM#SOURCE` form, as mount(8) sanitises PATH).
    let out = Command::new("mount")
        .args(["-t", "fuse"])
        .arg(format!(
            "{}#{}",
            dfs_tests::bin_path("dfs").display(),
            cluster.nameserver
        ))
        .arg(&mnt)
        .arg("-o")
        .arg(format!(
            "rw,nosuid,nodev,_netdev,cache_dir={},key={}",
            cache.display(),
            cluster.keys.client_file.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -t fuse dfs#URL: {out:?}");
    assert_eq!(fs_type(&mnt).as_deref(), Some("fuse.dfs"));
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"via dfs mount");
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_until("the unmount", Duration::from_secs(20), || !is_mounted(&mnt));

    // The same mount in the foreground, and dfs-fuse: both are type fuse.dfs.
    let mut fg = Command::new(dfs_tests::bin_path("dfs"))
        .arg("mount")
        .arg(&cluster.nameserver)
        .arg(&mnt)
        .arg("-f")
        .arg("--cache-dir")
        .arg(&cache)
        .env("DFS_KEY", &cluster.keys.client_file)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("dfs mount -f", Duration::from_secs(30), || is_mounted(&mnt));
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"via dfs mount");
    dfs_tests::process::signal(fg.id(), libc::SIGTERM);
    let status = wait_exit(&mut fg, Duration::from_secs(60));
    let mut err = String::new();
    let _ = fg.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert!(status.success(), "{status}: {err}");
    assert!(!is_mounted(&mnt));
    drop(tmp);

    let Some(mount) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    assert_eq!(fs_type(&mount.dir).as_deref(), Some("fuse.dfs"));
    assert_eq!(std::fs::read(mount.path("a")).unwrap(), b"via dfs mount");
}

#[test]
fn started_as_mount_fuse_dfs_both_binaries_are_the_mount_helper() {
    if !fuse_ok() {
        return;
    }
    let cluster = Cluster::start(1);
    for binary in ["dfs", "dfs-fuse"] {
        let tmp = tempfile::tempdir().unwrap();
        let (mnt, cache) = (tmp.path().join("mnt"), tmp.path().join("cache"));
        std::fs::create_dir(&mnt).unwrap();
        // What `ln -s $(command -v dfs) /sbin/mount.fuse.dfs` installs, in a temp dir.
        let helper = tmp.path().join("mount.fuse.dfs");
        std::os::unix::fs::symlink(dfs_tests::bin_path(binary), &helper).unwrap();
        let run = |extra: &[&str]| {
            Command::new(&helper)
                .arg(&cluster.nameserver)
                .arg(&mnt)
                .args(extra)
                .env("PATH", SYSTEM_PATH)
                .output()
                .unwrap()
        };
        let opts = format!(
            "rw,nosuid,nodev,_netdev,cache_dir={},key={}",
            cache.display(),
            cluster.keys.client_file.display()
        );

        // `-f` is mount(8)'s "fake": check, do not mount.
        let out = run(&["-f", "-o", &opts]);
        assert!(out.status.success(), "{binary} -f: {out:?}");
        assert!(!is_mounted(&mnt), "{binary}: -f must not mount");

        // What mount(8) runs for `mount -t fuse.dfs URL DIR -o OPTS` (or an fstab line).
        let out = run(&["-o", &opts, "-t", "fuse.dfs"]);
        assert!(out.status.success(), "{binary} as helper: {out:?}");
        assert!(
            is_mounted(&mnt),
            "{binary}: mounted when the helper returns"
        );
        assert_eq!(fs_type(&mnt).as_deref(), Some("fuse.dfs"));
        let name = format!("from-{binary}");
        std::fs::write(mnt.join(&name), binary.as_bytes()).unwrap();
        assert_eq!(std::fs::read(mnt.join(&name)).unwrap(), binary.as_bytes());
        assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
        wait_until("the unmount", Duration::from_secs(20), || !is_mounted(&mnt));

        // A usage error: one line, exit code 2.
        let out = run(&["-o", "bogus_option"]);
        assert_eq!(out.status.code(), Some(2), "{binary}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bogus_option"), "{err}");
        assert!(!is_mounted(&mnt));
        detach(&mnt);
    }
}
