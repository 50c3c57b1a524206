//! Real server processes: start a binary, wait for its ready line, kill -9, freeze, restart.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One server binary running as a child process, restartable on the same port and data.
pub struct ServerProcess {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Base URL (`http://127.0.0.1:PORT`); stays the same across restarts.
    pub url: String,
}

impl ServerProcess {
    /// Starts `bin` (e.g. `dfs-nameserver`) with `args`, which must not contain `--listen`;
    /// the first start picks a free port, restarts reuse it. Its stderr goes to `log`.
    pub fn start(bin: &str, args: &[String], log: &Path) -> ServerProcess {
        let mut server = ServerProcess {
            name: bin.to_owned(),
            args: args.to_vec(),
            log: log.to_path_buf(),
            child: None,
            url: String::new(),
        };
        server.launch("127.0.0.1:0");
        server
    }

    fn launch(&mut self, listen: &str) -> Duration {
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open server log");
        let mut child = Command::new(crate::bin_path(&self.name))
            .args(&self.args)
            .arg("--listen")
            .arg(listen)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", self.name));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(at) = line.find("listening on ") {
                        let _ = tx.send(line[at + "listening on ".len()..].trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let url = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("{} printed no ready line; its log:\n{log}", self.name);
            }
        };
        self.url = url;
        self.child = Some(child);
        started.elapsed()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash or power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data directory; returns the time until it was ready.
    pub fn restart(&mut self) -> Duration {
        self.kill9();
        // tokio listeners set SO_REUSEADDR, so the dead process's port is free again at once.
        let listen = self.url.trim_start_matches("http://").to_owned();
        self.launch(&listen)
    }

    /// SIGSTOP: the process stays alive but does nothing (a long GC pause, a frozen VM).
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`ServerProcess::freeze`].
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGCONT);
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// A whole cluster of real server processes under one data directory.
pub struct ProcessCluster {
    /// The nameserver process.
    pub nameserver: ServerProcess,
    /// The lockserver process.
    pub lockserver: ServerProcess,
    /// The fileserver processes.
    pub fileservers: Vec<ServerProcess>,
    /// Data and logs of every server.
    pub data: tempfile::TempDir,
    /// The cluster key of every server and the read-write key of clients and mounts.
    pub keys: crate::keys::TestKeys,
}

impl ProcessCluster {
    /// Starts lockserver, nameserver and `fileservers` fileservers, and waits for registration.
    pub fn start(fileservers: usize) -> ProcessCluster {
        ProcessCluster::start_with(fileservers, &[])
    }

    /// Like [`ProcessCluster::start`] with extra nameserver flags.
    pub fn start_with(fileservers: usize, nameserver_flags: &[&str]) -> ProcessCluster {
        let data = tempfile::Builder::new()
            .prefix("dfs-procs-")
            .tempdir()
            .expect("temp dir");
        let root = data.path();
        let arg = |p: PathBuf| p.to_string_lossy().into_owned();
        let keys = crate::keys::TestKeys::make(root);
        let key_flag = || ["--cluster-key".to_owned(), arg(keys.cluster_file.clone())];
        let mut lock_args = vec!["--data".into(), arg(root.join("lockserver"))];
        lock_args.extend(key_flag());
        let lockserver =
            ServerProcess::start("dfs-lockserver", &lock_args, &root.join("lockserver.log"));
        let mut ns_args = vec![
            "--data".into(),
            arg(root.join("nameserver")),
            "--lockserver".into(),
            lockserver.url.clone(),
        ];
        ns_args.extend(key_flag());
        ns_args.extend(nameserver_flags.iter().map(|s| s.to_string()));
        let nameserver =
            ServerProcess::start("dfs-nameserver", &ns_args, &root.join("nameserver.log"));
        let fileservers = (0..fileservers)
            .map(|i| {
                ServerProcess::start(
                    "dfs-fileserver",
                    &[
                        "--data".into(),
                        arg(root.join(format!("fileserver{i}"))),
                        "--nameserver".into(),
                        nameserver.url.clone(),
                        "--cluster-key".into(),
                        arg(keys.cluster_file.clone()),
                    ],
                    &root.join(format!("fileserver{i}.log")),
                )
            })
            .collect::<Vec<_>>();
        crate::keys::register(&nameserver.url, &keys.client_file);
        let cluster = ProcessCluster {
            nameserver,
            lockserver,
            fileservers,
            data,
            keys,
        };
        cluster.wait_for_fileservers(cluster.fileservers.len());
        cluster
    }

    /// Blocks until `n` fileservers are alive at the nameserver.
    pub fn wait_for_fileservers(&self, n: usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let names = dfs_proto::client::NameClient::new(&self.nameserver.url)
            .with_credential(self.keys.credential());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let alive = runtime
                .block_on(names.cluster())
                .map(|info| info.fileservers.iter().filter(|f| f.alive).count())
                .unwrap_or(0);
            if alive >= n {
                return;
            }
            assert!(Instant::now() < deadline, "fileservers did not register");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Keeps the data directory after the test (for post-mortems), printing where it is.
    pub fn keep_data(self) -> PathBuf {
        let ProcessCluster { data, .. } = self;
        let path = data.keep();
        eprintln!("kept cluster data in {}", path.display());
        path
    }
}
