//! Running one mount: build the pieces, mount, report readiness, serve until unmounted
//! (by `umount`, `fusermount3 -u`, SIGTERM or SIGINT), then finish pending work.

use crate::adapter::Adapter;
use crate::attr::Owner;
use crate::cache::Cache;
use crate::fs::{DfsFs, FsConfig};
use crate::options::MountConfig;
use anyhow::{bail, Context};
use dfs_client::leases::Leases;
use dfs_client::remote::Remote;
use fuser::{Config, INodeNo, MountOption, SessionACL};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an unmount request waits for open files to close before detaching lazily.
const UNMOUNT_PATIENCE: Duration = Duration::from_secs(30);

/// The fuser configuration for `cfg`.
pub fn fuser_config(cfg: &MountConfig) -> Config {
    let mut config = Config::default();
    let mut opts = vec![
        MountOption::FSName(cfg.nameserver.clone()),
        // As an option and not `MountOption::Subtype`: fuser passes that one only to
        // fusermount3, so a mount made by root (mount(2) directly) showed as plain `fuse`.
        MountOption::CUSTOM(format!("subtype={}", crate::options::SUBTYPE)),
    ];
    if cfg.read_only {
        opts.push(MountOption::RO);
    }
    if cfg.default_permissions {
        opts.push(MountOption::DefaultPermissions);
    }
    for flag in &cfg.passthrough_flags {
        opts.push(match flag.as_str() {
            "nosuid" => MountOption::NoSuid,
            "nodev" => MountOption::NoDev,
            "noexec" => MountOption::NoExec,
            "noatime" => MountOption::NoAtime,
            "sync" => MountOption::Sync,
            "dirsync" => MountOption::DirSync,
            other => MountOption::CUSTOM(other.to_owned()),
        });
    }
    config.mount_options = opts;
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else if cfg.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(2);
    config
}

/// Mounts and serves until unmounted. `on_ready` runs once the kernel accepted the mount.
pub fn run(cfg: MountConfig, on_ready: impl FnOnce()) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Reads of a cached file run on these workers (pread), so several are needed to keep
        // more than one read in flight: one reader and one worker (tried in run 5) made a
        // cold `cat` of a cached file 40 % slower for no steady gain on small files.
        .worker_threads(4)
        .thread_name("dfs-fuse-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cache = Cache::open(&cfg.cache_dir, cfg.cache_size)
        .with_context(|| format!("cannot use cache directory {}", cfg.cache_dir.display()))?;
    let pending = crate::writeback::pending(&cache);
    for (data, meta) in cache.leftover_dirty() {
        match meta {
            // Closed on a writeback mount: published below, once the mount is up.
            Some(meta) if meta.pending => {}
            Some(meta) => tracing::warn!(
                file = %data.display(), path = %meta.path, error = ?meta.last_error,
                "unsent changes from an earlier run are kept here; see docs/SEMANTICS.md to recover them"
            ),
            None => tracing::warn!(file = %data.display(), "unsent changes from an earlier run"),
        }
    }
    let tls = dfs_proto::tls::TlsConfig { ca: cfg.ca.clone() };
    let http = tls.http_client().context("cannot set up TLS")?;
    let remote = Remote::with_http(&cfg.nameserver, http);
    let remote = Arc::new(match &cfg.key {
        Some(path) => {
            let key = dfs_proto::auth::ClientKey::load(path)?;
            tracing::info!(name = %key.name, role = %key.role, "authenticating with a client key");
            remote.with_credential(key.credential())
        }
        None => remote,
    });
    let leases = Leases::new(
        remote.clone(),
        Leases::session_name_for("dfs-fuse"),
        cfg.lock_wait,
    );
    let fs = Arc::new(DfsFs::new(
        remote.clone(),
        Arc::new(cache),
        leases,
        FsConfig {
            read_only: cfg.read_only,
            owner: Owner::current(),
            relatime: cfg.relatime,
            attr_timeout: cfg.attr_timeout,
            writeback: cfg.writeback,
        },
    ));
    let root = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), fs.check_root()).await });
    match root {
        Ok(Ok(_)) => {}
        Ok(Err(err)) if err.code == dfs_proto::ErrorCode::Unauthenticated => bail!(
            "the nameserver at {} refused the mount's credential: {err}; give a client key \
             with --key FILE, -o key=FILE or DFS_KEY",
            cfg.nameserver
        ),
        Ok(Err(err)) => bail!("cannot reach the nameserver at {}: {err}", cfg.nameserver),
        Err(_) => bail!(
            "the nameserver at {} did not answer within 10 s",
            cfg.nameserver
        ),
    }
    if !cfg.mountpoint.is_dir() {
        bail!(
            "mount point {} is not a directory",
            cfg.mountpoint.display()
        );
    }
    let adapter = Adapter::new(fs.clone(), runtime.handle().clone(), cfg.entry_timeout)
        .with_passthrough(cfg.kernel_passthrough);
    let inflight = adapter.inflight();
    let mut session = fuser::Session::new(adapter, &cfg.mountpoint, &fuser_config(&cfg))
        .with_context(|| {
            format!(
                "cannot mount on {} (is /dev/fuse usable and fusermount3 installed?)",
                cfg.mountpoint.display()
            )
        })?;
    let notifier = session.notifier();
    fs.set_invalidator(Arc::new(move |ino| {
        if let Err(err) = notifier.inval_inode(INodeNo(ino), -1, 0) {
            tracing::debug!(ino, %err, "attribute invalidation failed");
        }
    }));
    let mut unmounter = session.unmount_callable();
    let mountpoint = cfg.mountpoint.clone();
    let fs_for_signal = fs.clone();
    let signalled = {
        let _in_runtime = runtime.enter();
        register_signals()
    };
    runtime.spawn(async move {
        signalled.await;
        tracing::info!("signal received: unmounting once open files are closed");
        let _ = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + UNMOUNT_PATIENCE;
            loop {
                match unmounter.unmount() {
                    Ok(()) => return,
                    Err(err) if Instant::now() < deadline => {
                        tracing::info!(%err, writers = fs_for_signal.open_writers(), "mount busy; waiting");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(err) => {
                        tracing::warn!(%err, "still busy: detaching lazily");
                        let _ = std::process::Command::new("fusermount3")
                            .arg("-u")
                            .arg("-z")
                            .arg(&mountpoint)
                            .status();
                        return;
                    }
                }
            }
        })
        .await;
    });
    tracing::info!(mountpoint = %cfg.mountpoint.display(), nameserver = %cfg.nameserver, "mounted");
    let recovery = (!pending.is_empty()).then(|| {
        let fs = fs.clone();
        runtime.spawn(async move { fs.publish_pending(pending).await })
    });
    on_ready();
    let served = session.run();
    finish_publishes(&fs, &inflight, recovery, cfg.writeback);
    runtime.block_on(fs.shutdown());
    fs.cache().close();
    tracing::info!("unmounted");
    served.context("the FUSE session failed")
}

/// After the kernel let go of the mount: waits for the publishes still running (closes that
/// return before publishing, with `-o writeback`, and files of an earlier run), saying how
/// many are left. What is not done by then stays pending in the cache for the next start.
fn finish_publishes(
    fs: &DfsFs,
    inflight: &std::sync::atomic::AtomicUsize,
    recovery: Option<tokio::task::JoinHandle<()>>,
    writeback: bool,
) {
    use std::sync::atomic::Ordering;
    let patience = if writeback {
        WRITEBACK_PATIENCE
    } else {
        Duration::from_secs(120)
    };
    let deadline = Instant::now() + patience;
    let mut said = Instant::now();
    loop {
        let recovering = recovery.as_ref().is_some_and(|r| !r.is_finished());
        let requests = inflight.load(Ordering::Acquire);
        if (requests == 0 && !recovering) || Instant::now() >= deadline {
            break;
        }
        if said.elapsed() >= Duration::from_secs(2) {
            tracing::info!(
                files = fs.open_writers(),
                requests,
                recovering,
                "unmount: waiting for publishes to finish"
            );
            eprintln!(
                "dfs-fuse: unmounting: {} file(s) still publishing{}",
                fs.open_writers(),
                if recovering {
                    ", and files of the last run"
                } else {
                    ""
                }
            );
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(recovery) = recovery {
        if !recovery.is_finished() {
            tracing::warn!(
                "unmount: files of the last run are still pending; published at the next start"
            );
            recovery.abort();
        }
    }
    let left = fs.open_writers();
    if left > 0 {
        tracing::warn!(
            left,
            "unmount: files still pending; published at the next start"
        );
        eprintln!("dfs-fuse: {left} file(s) not yet published stay in the cache; the next mount publishes them");
    }
}

/// How long an unmount with `-o writeback` waits for its background publishes.
const WRITEBACK_PATIENCE: Duration = Duration::from_secs(600);

/// SIGTERM and SIGINT, registered when this is called (not when first awaited), so a
/// signal sent the moment the mount is usable is not met by the default action.
fn register_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let registered = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = registered else {
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
