//! `dfs up`: a whole cluster (lockserver, nameserver, fileservers) on embedded defaults and
//! its mount, all in this one process: the servers as tasks on a tokio runtime, the mount
//! through the `dfs-fuse` library on the main thread. Nothing else needs to be built or
//! installed, so `cargo run --bin dfs -- up ./mnt` works on a fresh clone. Authentication is
//! on: the cluster key and two client keys are made in the data directory (see [`Keys`]).

use crate::keygen::{client_key_text, write_key_file};
use anyhow::{bail, Context};
use dfs_proto::auth::{ClientKey, ClusterKey, Role};
use dfs_proto::client::NameClient;
use dfs_proto::mountinfo::is_mounted;
use dfs_servers::common::certs::LocalCerts;
use dfs_servers::{common, fileserver, lockserver, nameserver};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How many fileservers `dfs up` runs by default: one more than the replication factor, so
/// a file stays fully replicated while any one of them is down.
const DEFAULT_FILESERVERS: usize = 3;

/// The replication factor `dfs up` asks for (or the number of fileservers, when fewer).
const REPLICATION: usize = 2;

/// Options of `dfs up`; everything has a default so `dfs up ./mnt` is enough.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Directory to mount the cluster on (created if missing).
    pub mountpoint: PathBuf,
    /// Where the servers keep their data and the mount its cache (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./dfs-data")]
    pub data: PathBuf,
    /// How many fileservers to run (replication factor is min(2, this)).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FILESERVERS)]
    pub fileservers: usize,
    /// Address the nameserver listens on; other mounts join with `dfs mount http://ADDR DIR`.
    /// Port 0 picks a free port (printed once mounted). Lockserver and fileservers always
    /// take free ports on 127.0.0.1.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Run every server and the mount over https, with a local CA and a certificate for
    /// 127.0.0.1/localhost made in DATA/tls (and kept there for later runs). Other clients
    /// join with `--ca DATA/tls/ca.pem`.
    #[arg(long)]
    pub tls: bool,
    /// Extra mount options, after `--`, as for `dfs mount` (e.g. `-- -o lock_wait=5`).
    #[arg(last = true, value_name = "MOUNT_ARGS")]
    pub fuse_args: Vec<String>,
}

/// A mistake in the command line found after clap parsed it (exit code 2, not 1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs the cluster and the mount until Ctrl-C or SIGTERM (or until the mount is unmounted
/// from outside), then unmounts, stops the servers and returns.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.fileservers == 0 {
        return Err(UsageError("--fileservers must be at least 1".into()).into());
    }
    // The mount options are checked before anything is created or started; the paths and
    // the nameserver URL are filled in below.
    let mut mount = mount_config(&args.mountpoint, &args.data, &args.fuse_args)?;
    std::fs::create_dir_all(&args.mountpoint)
        .with_context(|| format!("cannot create {}", args.mountpoint.display()))?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    let data = args
        .data
        .canonicalize()
        .with_context(|| format!("cannot use {}", args.data.display()))?;
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("cannot use {}", args.mountpoint.display()))?;
    if is_mounted(&mountpoint) {
        bail!("{} is already a mount point", mountpoint.display());
    }
    mount.mountpoint = mountpoint.clone();
    mount.cache_dir = data.join("cache");
    let certs = if args.tls {
        let dir = data.join("tls");
        let certs = LocalCerts::ensure(&dir)
            .with_context(|| format!("cannot make TLS certificates in {}", dir.display()))?;
        mount.ca = Some(certs.ca.clone());
        Some(certs)
    } else {
        None
    };
    let keys = Keys::make_or_load(&data)?;
    // The mount is the owner's: it gets the admin key (chmod of `/` as on a local disk).
    mount.key = Some(keys.admin.clone());

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (signal_tx, signal_rx) = watch::channel(false);
    runtime.spawn(async move {
        common::shutdown_signal().await;
        eprintln!("dfs: stopping");
        let _ = signal_tx.send(true);
    });
    let stop_servers = |runtime: tokio::runtime::Runtime| {
        let _ = stop_tx.send(true);
        runtime.shutdown_timeout(Duration::from_secs(10));
    };

    let mut interrupted = signal_rx.clone();
    let started = runtime.block_on(async {
        tokio::select! {
            started = start_servers(&args, &data, certs.as_ref(), &keys, stop_rx) => Some(started),
            _ = interrupted.wait_for(|signalled| *signalled) => None,
        }
    });
    let nameserver_url = match started {
        Some(Ok(url)) => url,
        Some(Err(err)) => {
            stop_servers(runtime);
            return Err(err);
        }
        None => {
            stop_servers(runtime);
            eprintln!("dfs: stopped");
            return Ok(());
        }
    };
    mount.nameserver = nameserver_url.clone();

    let mounted = dfs_fuse::session::run(mount, || {
        eprintln!(
            "dfs: mounted {} (nameserver {nameserver_url}, data in {}); press Ctrl-C to stop",
            mountpoint.display(),
            data.display()
        );
        if let Some(certs) = &certs {
            eprintln!(
                "dfs: over TLS; other clients need --ca {}",
                certs.ca.display()
            );
        }
        eprintln!(
            "dfs: keys in {dir}: use the CLI with `export DFS_KEY={admin}` (admin) or \
             DFS_KEY={user} (read-write); `dfs mount {nameserver_url} DIR --key {user}` \
             mounts it elsewhere",
            dir = data.display(),
            admin = keys.admin.display(),
            user = keys.user.display(),
        );
        // A Ctrl-C while the mount was starting came before the mount listened for it.
        if *signal_rx.borrow() {
            // SAFETY: raise(3) has no memory-safety preconditions.
            unsafe { libc::raise(libc::SIGTERM) };
        }
    });
    stop_servers(runtime);
    mounted.with_context(|| format!("cannot mount {}", mountpoint.display()))?;
    eprintln!("dfs: stopped");
    Ok(())
}

/// The mount's configuration, from the same options as `dfs mount` plus `-f` and the cache
/// in `DATA/cache` (always: the flag wins over a `cache_dir` option); the nameserver URL is
/// a placeholder until it is known.
fn mount_config(
    mountpoint: &Path,
    data: &Path,
    extra: &[String],
) -> anyhow::Result<dfs_fuse::options::MountConfig> {
    let mut argv: Vec<std::ffi::OsString> = vec![
        "dfs up".into(),
        "http://127.0.0.1".into(),
        mountpoint.into(),
        "-f".into(),
        "--cache-dir".into(),
        data.join("cache").into(),
    ];
    argv.extend(extra.iter().map(Into::into));
    let args = <dfs_fuse::options::Args as clap::Parser>::try_parse_from(argv).map_err(|err| {
        let text = err.to_string();
        let line = text.lines().next().unwrap_or_default();
        UsageError(format!(
            "bad mount arguments after `--`: {}",
            line.strip_prefix("error: ").unwrap_or(line)
        ))
    })?;
    args.into_config()
        .map_err(|msg| UsageError(format!("bad mount arguments after `--`: {msg}")).into())
}

/// Starts lockserver, nameserver and the fileservers as tasks that end when `stop` turns
/// true, and returns the nameserver's URL once every fileserver has registered.
async fn start_servers(
    args: &UpArgs,
    data: &Path,
    certs: Option<&LocalCerts>,
    keys: &Keys,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let tls = certs.is_some();
    let cert = certs.map(|c| c.cert.clone());
    let key = certs.map(|c| c.key.clone());
    let ca = certs.map(|c| c.ca.clone());
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let (lock_listener, lock_addr) = common::bind("127.0.0.1:0").await?;
    let lock_url = common::base_url(lock_addr, tls);
    let lock_config = lockserver::Config {
        data: data.join("lockserver"),
        tls_cert: cert.clone(),
        tls_key: key.clone(),
        cluster_key: Some(keys.cluster.clone()),
        ..Default::default()
    };
    tokio::spawn(report(
        "lockserver",
        lockserver::run(lock_listener, lock_config, stopped(stop.clone())),
    ));

    let (ns_listener, ns_addr) = common::bind(&args.listen).await?;
    let ns_url = common::base_url(ns_addr, tls);
    let ns_config = nameserver::Config {
        data: data.join("nameserver"),
        tls_cert: cert.clone(),
        tls_key: key.clone(),
        ca: ca.clone(),
        lockserver: Some(lock_url),
        replication: args.fileservers.min(REPLICATION) as u32,
        cluster_key: Some(keys.cluster.clone()),
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
            tls_cert: cert.clone(),
            tls_key: key.clone(),
            ca: ca.clone(),
            cluster_key: Some(keys.cluster.clone()),
            ..Default::default()
        };
        tokio::spawn(report(
            "fileserver",
            fileserver::run(fs_listener, fs_config, stopped(stop.clone())),
        ));
    }

    let admin = ClientKey::load(&keys.admin)?;
    let http = dfs_proto::tls::TlsConfig { ca }.http_client()?;
    let names = NameClient::with_http(&ns_url, http).with_credential(admin.credential());
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

/// The key files of a `dfs up` cluster, in its data directory: made on the first start, read
/// on every later one, so that keys handed out stay valid across restarts.
struct Keys {
    /// The servers' shared secret.
    cluster: PathBuf,
    /// An admin key: the mount's, and the one to use the CLI with.
    admin: PathBuf,
    /// A read-write key to hand to other users and mounts.
    user: PathBuf,
}

impl Keys {
    fn make_or_load(data: &Path) -> anyhow::Result<Keys> {
        let keys = Keys {
            cluster: data.join("cluster.key"),
            admin: data.join("admin.key"),
            user: data.join("user.key"),
        };
        if !keys.cluster.exists() {
            let text = format!("{}\n", ClusterKey::generate().to_text());
            write_key_file(&keys.cluster, &text)
                .with_context(|| format!("cannot write {}", keys.cluster.display()))?;
        }
        let cluster = ClusterKey::load(&keys.cluster)?;
        for (path, name, role) in [
            (&keys.admin, "admin", Role::Admin),
            (&keys.user, "user", Role::ReadWrite),
        ] {
            if !path.exists() {
                let key = cluster.issue_client(name, role)?;
                write_key_file(path, &client_key_text(&key))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        Ok(keys)
    }
}

/// Prints why a server task ended with an error (it runs detached, so no one else would).
async fn report(name: &str, server: impl std::future::Future<Output = anyhow::Result<()>>) {
    if let Err(err) = server.await {
        eprintln!("dfs: {name} failed: {err:#}");
    }
}
