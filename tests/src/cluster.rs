//! An in-process cluster: nameserver, lockserver and N fileservers on `127.0.0.1:0`, with
//! authentication on (a cluster key and a read-write client key in its temp dir).

use crate::keys::TestKeys;
use dfs_client::remote::Remote;
use dfs_proto::client::{FileClient, LockClient, NameClient};
use dfs_servers::{fileserver, lockserver, nameserver};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A running cluster whose servers live on a background tokio runtime, so tests can do
/// blocking file I/O (on a mount, with shell tools) on their own thread. Dropping it stops all.
pub struct Cluster {
    /// Base URL of the nameserver.
    pub nameserver: String,
    /// Base URL of the lockserver.
    pub lockserver: String,
    /// Base URLs of the fileservers, in start order.
    pub fileservers: Vec<String>,
    /// Where every server keeps its data (kept on failure when `DFS_KEEP_DATA=1`).
    pub data: tempfile::TempDir,
    /// The CA that signed the servers' certificate when the cluster speaks https
    /// ([`Cluster::start_tls`]); its clients must trust it.
    pub ca: Option<PathBuf>,
    /// The cluster key every server uses and the read-write key of mounts and clients.
    pub keys: TestKeys,
    runtime: Option<tokio::runtime::Runtime>,
    stops: Vec<oneshot::Sender<()>>,
}

impl Cluster {
    /// Starts a cluster with `fileservers` fileservers and waits until they registered.
    pub fn start(fileservers: usize) -> Cluster {
        Cluster::start_with(fileservers, |_| {})
    }

    /// Like [`Cluster::start`], letting the test adjust the nameserver config.
    pub fn start_with(fileservers: usize, tune: impl FnOnce(&mut nameserver::Config)) -> Cluster {
        Cluster::start_tuned(fileservers, tune, |_| {})
    }

    /// Like [`Cluster::start`], letting the test adjust the nameserver and lockserver configs
    /// (e.g. a short lease TTL for expiry tests).
    pub fn start_tuned(
        fileservers: usize,
        tune: impl FnOnce(&mut nameserver::Config),
        tune_locks: impl FnOnce(&mut lockserver::Config),
    ) -> Cluster {
        Cluster::start_inner(fileservers, tune, tune_locks, false)
    }

    /// Like [`Cluster::start`], every server over https with a certificate from a fresh
    /// local CA (in `data/tls`, see [`Cluster::ca`]); the servers trust it for their calls to
    /// each other.
    pub fn start_tls(fileservers: usize) -> Cluster {
        Cluster::start_inner(fileservers, |_| {}, |_| {}, true)
    }

    fn start_inner(
        fileservers: usize,
        tune: impl FnOnce(&mut nameserver::Config),
        tune_locks: impl FnOnce(&mut lockserver::Config),
        tls: bool,
    ) -> Cluster {
        crate::init_test_logging();
        let data = tempfile::Builder::new()
            .prefix("dfs-cluster-")
            .tempdir()
            .expect("a temp dir for the cluster");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut stops = Vec::new();
        let root = data.path().to_path_buf();
        let certs = tls.then(|| {
            dfs_servers::common::certs::LocalCerts::ensure(&root.join("tls"))
                .expect("a local CA and server certificate")
        });
        let cert = certs.as_ref().map(|c| c.cert.clone());
        let key = certs.as_ref().map(|c| c.key.clone());
        let ca = certs.as_ref().map(|c| c.ca.clone());
        let keys = TestKeys::make(&root);

        let (lock_listener, lock_url) = runtime.block_on(bind(tls));
        let mut lock_config = lockserver::Config {
            data: root.join("lockserver"),
            tls_cert: cert.clone(),
            tls_key: key.clone(),
            cluster_key: Some(keys.cluster_file.clone()),
            ..Default::default()
        };
        tune_locks(&mut lock_config);
        stops.push(spawn_server(&runtime, move |stop| {
            lockserver::run(lock_listener, lock_config, stop)
        }));

        let (ns_listener, ns_url) = runtime.block_on(bind(tls));
        let mut ns_config = nameserver::Config {
            data: root.join("nameserver"),
            tls_cert: cert.clone(),
            tls_key: key.clone(),
            ca: ca.clone(),
            lockserver: Some(lock_url.clone()),
            // As `dfs up` does: as many copies as there are fileservers, at most 2. A publish
            // needs every copy the replication factor asks for.
            replication: (fileservers as u32).clamp(1, 2),
            cluster_key: Some(keys.cluster_file.clone()),
            ..Default::default()
        };
        tune(&mut ns_config);
        stops.push(spawn_server(&runtime, move |stop| {
            nameserver::run(ns_listener, ns_config, stop)
        }));

        let mut fs_urls = Vec::new();
        for i in 0..fileservers {
            let (fs_listener, fs_url) = runtime.block_on(bind(tls));
            let fs_config = fileserver::Config {
                data: root.join(format!("fileserver{i}")),
                nameserver: ns_url.clone(),
                tls_cert: cert.clone(),
                tls_key: key.clone(),
                ca: ca.clone(),
                cluster_key: Some(keys.cluster_file.clone()),
                ..Default::default()
            };
            stops.push(spawn_server(&runtime, move |stop| {
                fileserver::run(fs_listener, fs_config, stop)
            }));
            fs_urls.push(fs_url);
        }

        crate::keys::register(&ns_url, &keys.client_file);
        let cluster = Cluster {
            nameserver: ns_url,
            lockserver: lock_url,
            fileservers: fs_urls,
            data,
            ca,
            keys,
            runtime: Some(runtime),
            stops,
        };
        cluster.wait_for_fileservers(fileservers);
        cluster
    }

    /// A nameserver client for this cluster, with the read-write key.
    pub fn names(&self) -> NameClient {
        NameClient::with_http(&self.nameserver, self.http()).with_credential(self.keys.credential())
    }

    /// A nameserver client with the servers' credential (tests that play a fileserver).
    pub fn server_names(&self) -> NameClient {
        NameClient::with_http(&self.nameserver, self.http())
            .with_credential(self.keys.server_credential())
    }

    /// A key file with `role` named `name` in the cluster's temp dir (made on first use).
    pub fn key_file(&self, name: &str, role: dfs_proto::auth::Role) -> PathBuf {
        let path = self.data.path().join(format!("{name}.key"));
        if !path.exists() {
            let key = self.keys.issue(name, role);
            std::fs::write(&path, format!("{}\n", key.to_text())).expect("write a key file");
        }
        path
    }

    /// A lockserver client with the read-write key.
    pub fn locks(&self) -> LockClient {
        LockClient::with_http(&self.lockserver, self.http()).with_credential(self.keys.credential())
    }

    /// A fileserver client with the servers' credential (tests look at and damage blobs
    /// as the cluster's own servers would).
    pub fn files(&self) -> FileClient {
        FileClient::with_http(self.http()).with_credential(self.keys.server_credential())
    }

    /// The protocol layer of `dfs-client` with the read-write key, at `url` (the
    /// nameserver's, or a proxy's in front of it).
    pub fn remote_at(&self, url: &str) -> Remote {
        Remote::with_http(url, self.http()).with_credential(self.keys.credential())
    }

    /// The file-like client with the read-write key, at `url`.
    pub fn client_at(&self, url: &str) -> dfs_client::Client {
        dfs_client::Client::with_key(url, self.keys.client.clone())
    }

    /// The blocking file-like client with the read-write key.
    pub fn blocking_client(&self) -> dfs_client::blocking::Client {
        dfs_client::blocking::Client::with_key(&self.nameserver, self.keys.client.clone())
            .expect("a client runtime")
    }

    /// An HTTP client for this cluster's servers (trusting its CA when it speaks https).
    pub fn http(&self) -> reqwest::Client {
        dfs_proto::tls::TlsConfig {
            ca: self.ca.clone(),
        }
        .http_client()
        .expect("the cluster's CA loads")
    }

    /// Runs a future on the cluster's runtime (for typed-client calls from sync tests).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .block_on(future)
    }

    /// Root of the servers' data directories.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Blocks until `n` fileservers are registered and alive at the nameserver.
    pub fn wait_for_fileservers(&self, n: usize) {
        let names = self.names();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alive = self
                .block_on(names.cluster())
                .map(|info| info.fileservers.iter().filter(|f| f.alive).count())
                .unwrap_or(0);
            if alive >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {alive} of {n} fileservers registered within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        if std::env::var_os("DFS_KEEP_DATA").is_some() {
            let kept: PathBuf = self.data.path().to_path_buf();
            eprintln!("keeping cluster data in {}", kept.display());
            std::mem::forget(std::mem::replace(
                &mut self.data,
                tempfile::tempdir().expect("a temp dir"),
            ));
        }
    }
}

async fn bind(tls: bool) -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = dfs_servers::common::base_url(listener.local_addr().expect("local addr"), tls);
    (listener, url)
}

fn spawn_server<F, Fut>(runtime: &tokio::runtime::Runtime, start: F) -> oneshot::Sender<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(async move {
            let _ = stop_rx.await;
        });
    let server = start(stop);
    runtime.spawn(async move {
        if let Err(err) = server.await {
            eprintln!("in-process server failed: {err:#}");
        }
    });
    stop_tx
}
