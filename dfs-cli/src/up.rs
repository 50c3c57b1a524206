//! `dfs up`: in-process servers on embedded defaults plus a `dfs-fuse` child for the mount.

use anyhow::{bail, Context};
use dfs_proto::client::NameClient;
use dfs_proto::mountinfo::is_mounted;
use dfs_servers::{common, fileserver, lockserver, nameserver};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Options of `dfs up`; everything has a default so `dfs up ./mnt` is enough.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Directory to mount the cluster on (created if missing).
    pub mountpoint: PathBuf,
    /// Where the servers keep their data and the mount its cache.
    #[arg(long, default_value = "./dfs-data")]
    pub data: PathBuf,
    /// How many fileservers to run (replication factor is min(2, this)).
    #[arg(long, default_value_t = 2)]
    pub fileservers: usize,
    /// Address of the nameserver, for other mounts: `dfs-fuse http://ADDR DIR`.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Extra arguments for dfs-fuse, after `--` (e.g. `-- -o lock_wait=5`).
    #[arg(last = true)]
    pub fuse_args: Vec<String>,
}

/// Runs the cluster and the mount until Ctrl-C or SIGTERM.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.fileservers == 0 {
        bail!("--fileservers must be at least 1");
    }
    std::fs::create_dir_all(&args.mountpoint)
        .with_context(|| format!("cannot create {}", args.mountpoint.display()))?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    let data = args.data.canonicalize()?;
    let mountpoint = args.mountpoint.canonicalize()?;
    if is_mounted(&mountpoint) {
        bail!("{} is already a mount point", mountpoint.display());
    }

    let runtime = tokio::runtime::Runtime::new()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let nameserver_url = runtime.block_on(start_servers(&args, &data, stop_rx))?;

    let mut mount = spawn_mount(&nameserver_url, &mountpoint, &data, &args.fuse_args)?;
    let mounted = wait_mounted(&mut mount, &mountpoint);
    if let Err(err) = mounted {
        let _ = stop_tx.send(true);
        runtime.shutdown_timeout(Duration::from_secs(5));
        return Err(err);
    }
    eprintln!(
        "dfs: mounted {} (nameserver {nameserver_url}, data in {}); press Ctrl-C to stop",
        mountpoint.display(),
        data.display()
    );

    runtime.block_on(async {
        let child_exit = async {
            loop {
                if matches!(mount.try_wait(), Ok(Some(_))) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = common::shutdown_signal() => eprintln!("dfs: stopping"),
            _ = child_exit => eprintln!("dfs: the mount process ended; stopping the servers"),
        }
    });

    unmount(&mut mount, &mountpoint);
    let _ = stop_tx.send(true);
    runtime.shutdown_timeout(Duration::from_secs(10));
    eprintln!("dfs: stopped");
    Ok(())
}

async fn start_servers(
    args: &UpArgs,
    data: &Path,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let (lock_listener, lock_addr) = common::bind("127.0.0.1:0").await?;
    let lock_url = format!("http://{lock_addr}");
    let lock_config = lockserver::Config {
        data: data.join("lockserver"),
        ..Default::default()
    };
    tokio::spawn(report(
        "lockserver",
        lockserver::run(lock_listener, lock_config, stopped(stop.clone())),
    ));

    let (ns_listener, ns_addr) = common::bind(&args.listen).await?;
    let ns_url = format!("http://{ns_addr}");
    let ns_config = nameserver::Config {
        data: data.join("nameserver"),
        lockserver: Some(lock_url),
        replication: args.fileservers.min(2) as u32,
        ..Default::default()
    };
    tokio::spawn(report(
        "nameserver",
        nameserver::run(ns_listener, ns_config, stopped(stop.clone())),
    ));

    for i in 0..args.fileservers {
        let (fs_listener, _) = common::bind("127.0.0.1:0").await?;
        let fs_config = fileserver::Config {
            data: data.join(format!("fileserver{i}")),
            nameserver: ns_url.clone(),
            ..Default::default()
        };
        tokio::spawn(report(
            "fileserver",
            fileserver::run(fs_listener, fs_config, stopped(stop.clone())),
        ));
    }

    let names = NameClient::new(&ns_url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive = names
            .cluster()
            .await
            .map(|c| c.fileservers.iter().filter(|f| f.alive).count())
            .unwrap_or(0);
        if alive >= args.fileservers {
            return Ok(ns_url);
        }
        if Instant::now() > deadline {
            bail!("only {alive} of {} fileservers came up", args.fileservers);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn report(name: &str, server: impl std::future::Future<Output = anyhow::Result<()>>) {
    if let Err(err) = server.await {
        eprintln!("dfs: {name} failed: {err:#}");
    }
}

/// `dfs-fuse` from beside this binary, else from `PATH`.
fn fuse_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("dfs-fuse")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("dfs-fuse"))
}

fn spawn_mount(
    nameserver: &str,
    mountpoint: &Path,
    data: &Path,
    extra: &[String],
) -> anyhow::Result<Child> {
    let binary = fuse_binary();
    Command::new(&binary)
        .arg(nameserver)
        .arg(mountpoint)
        .arg("-f")
        .arg("--cache-dir")
        .arg(data.join("cache"))
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

fn wait_mounted(mount: &mut Child, mountpoint: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if is_mounted(mountpoint) {
            return Ok(());
        }
        if let Ok(Some(status)) = mount.try_wait() {
            bail!("dfs-fuse exited before mounting ({status})");
        }
        if Instant::now() > deadline {
            let _ = mount.kill();
            bail!(
                "dfs-fuse did not mount {} within 30 s",
                mountpoint.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM lets dfs-fuse finish pending uploads and unmount; a lazy unmount is the fallback.
fn unmount(mount: &mut Child, mountpoint: &Path) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(mount.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if matches!(mount.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if matches!(mount.try_wait(), Ok(None)) {
        let _ = mount.kill();
        let _ = mount.wait();
    }
    if is_mounted(mountpoint) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(mountpoint)
            .status();
    }
}
