//! The system under test: server processes (so each one's RSS can be measured) and FUSE mounts.

use crate::util::{find_binary, is_mounted, vm_hwm};
use anyhow::{bail, Context};
use dfs_proto::auth::{ClusterKey, Role};
use dfs_proto::client::{FileClient, NameClient};
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One server binary running as a child; killed when dropped so a failed run leaves nothing.
pub struct ServerProc {
    /// Binary name, for the memory breakdown.
    pub name: String,
    /// Base URL from its ready line.
    pub url: String,
    child: Child,
}

impl ServerProc {
    /// Starts `bin` on `127.0.0.1:0` and waits for its ready line `... listening on http://ADDR`.
    pub fn start(
        bin: &str,
        label: &str,
        args: &[String],
        log: &Path,
        bin_dir: Option<&Path>,
    ) -> anyhow::Result<ServerProc> {
        let path = find_binary(bin, bin_dir)?;
        let log_file = std::fs::File::create(log)?;
        let mut child = Command::new(&path)
            .args(args)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            // Keep draining stdout after the ready line so the server never blocks on it.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let (false, Some(at)) = (sent, line.find("listening on ")) {
                    let _ = tx.send(line[at + "listening on ".len()..].trim().to_owned());
                    sent = true;
                }
            }
        });
        let mut server = ServerProc {
            name: label.to_owned(),
            url: String::new(),
            child,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => server.url = url,
            Err(_) => {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("{bin} printed no ready line within 30 s; log:\n{log}");
            }
        }
        Ok(server)
    }

    /// Process id, for VmHWM.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A `dfs-fuse` child in the foreground; unmounted (SIGTERM, then lazy unmount) when dropped.
pub struct Mount {
    /// The mount point.
    pub path: PathBuf,
    /// Its cache directory (same disk as the local reference).
    pub cache: PathBuf,
    child: Child,
}

impl Mount {
    /// Spawns `dfs-fuse NAMESERVER MOUNTPOINT -f --cache-dir CACHE EXTRA...` and waits until the
    /// mount point shows in /proc/self/mountinfo.
    pub fn start(
        nameserver: &str,
        path: &Path,
        cache: &Path,
        extra: &[String],
        log: &Path,
        bin_dir: Option<&Path>,
    ) -> anyhow::Result<Mount> {
        std::fs::create_dir_all(path)?;
        std::fs::create_dir_all(cache)?;
        let bin = find_binary("dfs-fuse", bin_dir)?;
        let child = Command::new(&bin)
            .arg(nameserver)
            .arg(path)
            .arg("-f")
            .arg("--cache-dir")
            .arg(cache)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(std::fs::File::create(log.with_extension("err"))?)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut mount = Mount {
            path: path.canonicalize()?,
            cache: cache.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&mount.path) {
            if let Ok(Some(status)) = mount.child.try_wait() {
                let err = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
                bail!("dfs-fuse exited before mounting ({status}):\n{err}");
            }
            if Instant::now() > deadline {
                bail!(
                    "dfs-fuse did not mount {} within 30 s",
                    mount.path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(mount)
    }

    /// Process id, for VmHWM.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        reap_mount(&mut self.child, &self.path);
    }
}

/// Ends a mount process that was asked to stop: waits up to 30 s for it to exit, kills it if
/// it did not, and detaches whatever is still mounted at `path` (lazily), so a bench run
/// never leaves a mount behind.
pub(crate) fn reap_mount(child: &mut Child, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
    if is_mounted(path) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(path)
            .status();
    }
}

/// Transfer counters summed over all fileservers: the proof of "nothing downloaded".
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// HTTP requests served.
    pub requests: u64,
    /// Blob uploads completed.
    pub uploads: u64,
    /// Blob downloads started.
    pub downloads: u64,
    /// Bytes received in uploads.
    pub bytes_in: u64,
    /// Bytes sent in downloads.
    pub bytes_out: u64,
}

impl Counters {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            requests: self.requests.saturating_sub(before.requests),
            uploads: self.uploads.saturating_sub(before.uploads),
            downloads: self.downloads.saturating_sub(before.downloads),
            bytes_in: self.bytes_in.saturating_sub(before.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(before.bytes_out),
        }
    }
}

/// fsync counts of every server at one moment (`GET /v1/stats`).
#[derive(Clone, Debug, Default)]
pub struct Fsyncs {
    /// The lockserver's.
    pub lockserver: u64,
    /// The nameserver's.
    pub nameserver: u64,
    /// The nameserver's durable commits.
    pub ns_commits: u64,
    /// The changes those commits carried.
    pub ns_changes: u64,
    /// Each fileserver's, in cluster order.
    pub fileservers: Vec<u64>,
}

impl Fsyncs {
    /// Adds what happened between `before` and `after` to `self` (summing several phases).
    pub fn add_since(&mut self, before: &Fsyncs, after: &Fsyncs) {
        self.lockserver += after.lockserver.saturating_sub(before.lockserver);
        self.nameserver += after.nameserver.saturating_sub(before.nameserver);
        self.ns_commits += after.ns_commits.saturating_sub(before.ns_commits);
        self.ns_changes += after.ns_changes.saturating_sub(before.ns_changes);
        self.fileservers
            .resize(after.fileservers.len().max(self.fileservers.len()), 0);
        for (sum, (a, b)) in self
            .fileservers
            .iter_mut()
            .zip(after.fileservers.iter().zip(&before.fileservers))
        {
            *sum += a.saturating_sub(*b);
        }
    }

    /// Per created file of a sum made by [`Fsyncs::add_since`].
    pub fn per_file_total(&self, files: u64) -> crate::report::FsyncsPerFile {
        let zero = Fsyncs {
            fileservers: vec![0; self.fileservers.len()],
            ..Fsyncs::default()
        };
        self.per_file(&zero, files)
    }

    /// Per created file between `before` and `self`.
    pub fn per_file(&self, before: &Fsyncs, files: u64) -> crate::report::FsyncsPerFile {
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / files.max(1) as f64;
        let commits = self.ns_commits.saturating_sub(before.ns_commits);
        let changes = self.ns_changes.saturating_sub(before.ns_changes);
        crate::report::FsyncsPerFile {
            files,
            lockserver: per(self.lockserver, before.lockserver),
            nameserver: per(self.nameserver, before.nameserver),
            fileservers: self
                .fileservers
                .iter()
                .zip(&before.fileservers)
                .map(|(a, b)| per(*a, *b))
                .collect(),
            changes_per_commit: changes as f64 / commits.max(1) as f64,
        }
    }
}

/// Lockserver, nameserver and fileservers as separate processes, plus the runtime for clients.
pub struct Cluster {
    /// Every server process (lockserver, nameserver, fileservers).
    pub servers: Vec<ServerProc>,
    /// Nameserver base URL, for the mounts.
    pub nameserver: String,
    /// Lockserver base URL, for its fsync counter.
    pub lockserver: String,
    /// Fileserver base URLs, for curl and the counters.
    pub fileservers: Vec<String>,
    /// Runs typed-client calls from this synchronous harness.
    pub runtime: tokio::runtime::Runtime,
    /// The read-write client key of the mounts and `dfs` runs (`--key`, `DFS_KEY`).
    pub key_file: PathBuf,
    cluster_key: ClusterKey,
}

impl Cluster {
    /// Starts the cluster under `root` and waits until every fileserver registered.
    pub fn start(
        root: &Path,
        fileservers: usize,
        replication: u32,
        bin_dir: Option<&Path>,
    ) -> anyhow::Result<Cluster> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let arg = |p: PathBuf| p.to_string_lossy().into_owned();
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs)?;
        // Authentication is on, as in production: its cost is part of what is measured.
        let cluster_key = ClusterKey::generate();
        let cluster_key_file = root.join("cluster.key");
        std::fs::write(&cluster_key_file, format!("{}\n", cluster_key.to_text()))?;
        let key_file = root.join("bench.key");
        let client = cluster_key.issue_client("bench", Role::ReadWrite)?;
        std::fs::write(&key_file, format!("{}\n", client.to_text()))?;
        let key_flag = ["--cluster-key".to_owned(), arg(cluster_key_file.clone())];
        let lock = ServerProc::start(
            "dfs-lockserver",
            "lockserver",
            &[
                "--data".into(),
                arg(root.join("lockserver")),
                key_flag[0].clone(),
                key_flag[1].clone(),
            ],
            &logs.join("lockserver.log"),
            bin_dir,
        )?;
        let ns = ServerProc::start(
            "dfs-nameserver",
            "nameserver",
            &[
                "--data".into(),
                arg(root.join("nameserver")),
                "--lockserver".into(),
                lock.url.clone(),
                "--replication".into(),
                replication.to_string(),
                key_flag[0].clone(),
                key_flag[1].clone(),
            ],
            &logs.join("nameserver.log"),
            bin_dir,
        )?;
        let nameserver = ns.url.clone();
        let lockserver = lock.url.clone();
        let mut servers = vec![lock, ns];
        let mut urls = Vec::new();
        for i in 0..fileservers {
            let fs = ServerProc::start(
                "dfs-fileserver",
                &format!("fileserver{i}"),
                &[
                    "--data".into(),
                    arg(root.join(format!("fileserver{i}"))),
                    "--nameserver".into(),
                    nameserver.clone(),
                    key_flag[0].clone(),
                    key_flag[1].clone(),
                ],
                &logs.join(format!("fileserver{i}.log")),
                bin_dir,
            )?;
            urls.push(fs.url.clone());
            servers.push(fs);
        }
        let cluster = Cluster {
            servers,
            nameserver,
            lockserver,
            fileservers: urls,
            runtime,
            key_file,
            cluster_key,
        };
        cluster.wait_registered(fileservers)?;
        Ok(cluster)
    }

    /// A nameserver client with the servers' credential (the harness looks, never writes).
    fn names(&self) -> NameClient {
        NameClient::new(&self.nameserver).with_credential(self.cluster_key.server_credential())
    }

    /// A fileserver client with the servers' credential: the harness deletes reference blobs.
    pub fn files(&self) -> FileClient {
        FileClient::new().with_credential(self.cluster_key.server_credential())
    }

    /// The `Authorization` header value of the curl references (raw blob transfers, as the
    /// servers make them).
    pub fn auth_header(&self) -> String {
        self.cluster_key.server_credential().header_value()
    }

    fn wait_registered(&self, n: usize) -> anyhow::Result<()> {
        let names = self.names();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alive = self
                .runtime
                .block_on(names.cluster())
                .map(|c| c.fileservers.iter().filter(|f| f.alive).count())
                .unwrap_or(0);
            if alive >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {alive} of {n} fileservers registered within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Counters summed over all fileservers.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let client = self.files();
        let mut sum = Counters::default();
        for url in &self.fileservers {
            let s = self
                .runtime
                .block_on(client.stats(url))
                .map_err(|e| anyhow::anyhow!("stats of {url}: {e}"))?;
            sum.requests += s.requests;
            sum.uploads += s.uploads;
            sum.downloads += s.downloads;
            sum.bytes_in += s.bytes_in;
            sum.bytes_out += s.bytes_out;
        }
        Ok(sum)
    }

    /// Every server's fsync count (and the nameserver's commits and changes), for the fsyncs
    /// per created file.
    pub fn fsyncs(&self) -> anyhow::Result<Fsyncs> {
        let credential = self.cluster_key.server_credential();
        let lock = dfs_proto::client::LockClient::new(&self.lockserver).with_credential(credential);
        let lock = self
            .runtime
            .block_on(lock.stats())
            .map_err(|e| anyhow::anyhow!("stats of the lockserver: {e}"))?;
        let names = self
            .runtime
            .block_on(self.names().stats())
            .map_err(|e| anyhow::anyhow!("stats of the nameserver: {e}"))?;
        let client = self.files();
        let mut fileservers = Vec::new();
        for url in &self.fileservers {
            let s = self
                .runtime
                .block_on(client.stats(url))
                .map_err(|e| anyhow::anyhow!("stats of {url}: {e}"))?;
            fileservers.push(s.fsyncs);
        }
        Ok(Fsyncs {
            lockserver: lock.fsyncs,
            nameserver: names.fsyncs,
            ns_commits: names.commits,
            ns_changes: names.mutations,
            fileservers,
        })
    }

    /// The (file id, version, fileserver URLs) of a published file, for the curl reference.
    pub fn locate(&self, path: &str) -> anyhow::Result<(u64, u64, Vec<String>)> {
        let names = self.names();
        let dfs_path = dfs_proto::DfsPath::parse(path)
            .map_err(|e| anyhow::anyhow!("bad DFS path {path}: {e}"))?;
        let entry = self
            .runtime
            .block_on(names.stat(&dfs_path))
            .map_err(|e| anyhow::anyhow!("stat {path}: {e}"))?;
        let mut urls = entry.locations.clone();
        urls.extend(self.fileservers.iter().cloned());
        Ok((entry.id, entry.version, urls))
    }

    /// Peak RSS of every server process: (name, bytes).
    pub fn peak_rss(&self) -> Vec<(String, Option<u64>)> {
        self.servers
            .iter()
            .map(|s| (s.name.clone(), vm_hwm(s.pid())))
            .collect()
    }
}
