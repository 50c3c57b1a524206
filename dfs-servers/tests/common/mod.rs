//! Helpers the nameserver integration tests share: a nameserver on `127.0.0.1:0`, a real
//! fileserver registered with it, and waiting for a condition that becomes true eventually.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use dfs_proto::client::NameClient;
use dfs_proto::DfsPath;
use dfs_servers::fileserver;
use dfs_servers::nameserver::{run, Config};
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A path the test knows to be valid.
pub fn p(s: &str) -> DfsPath {
    DfsPath::parse(s).unwrap()
}

/// A nameserver running in this process until [`Ns::stop`].
pub struct Ns {
    pub url: String,
    pub client: NameClient,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Ns {
    /// Starts on port 0 with its data under `data`. Registered fileservers stay alive for
    /// 60 s without a heartbeat unless `tweak` (applied last) says otherwise, so a test's
    /// stub fileservers do not die under it.
    pub async fn start(data: &Path, tweak: impl FnOnce(&mut Config)) -> Ns {
        let mut config = Config {
            data: data.to_owned(),
            heartbeat_timeout_ms: 60_000,
            // These tests are about the namespace and storage; auth_matrix.rs runs with keys.
            insecure: true,
            ..Config::default()
        };
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, config, async move {
            let _ = rx.await;
        }));
        let client = NameClient::new(&url);
        for _ in 0..500 {
            if client.healthz().await.is_ok() {
                break;
            }
            assert!(!task.is_finished(), "nameserver exited at start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ns {
            url,
            client,
            stop: Some(tx),
            task,
        }
    }

    /// Shuts it down and checks it exited cleanly.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// Polls `check` every 20 ms for up to 10 s; panics naming `what` when it never held.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A real fileserver (from `dfs_servers::fileserver`) registered with the nameserver at `ns`:
/// its id, the sender that stops it, and its task.
pub async fn real_fileserver(
    ns: &str,
    data: &Path,
) -> (String, oneshot::Sender<()>, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = fileserver::Config {
        data: data.to_owned(),
        nameserver: ns.to_owned(),
        insecure: true,
        ..fileserver::Config::default()
    };
    let server = fileserver::Fileserver::start(listener, config)
        .await
        .unwrap();
    let id = server.id().to_owned();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .serve(async move {
                let _ = rx.await;
            })
            .await;
    });
    (id, tx, task)
}

/// `n` real fileservers with data under `dir/fs0..`, registered with `ns`, once the
/// nameserver sees all of them alive.
pub async fn live_fileservers(
    ns: &Ns,
    dir: &Path,
    n: usize,
) -> Vec<(String, oneshot::Sender<()>, JoinHandle<()>)> {
    let mut servers = Vec::new();
    for i in 0..n {
        servers.push(real_fileserver(&ns.url, &dir.join(format!("fs{i}"))).await);
    }
    eventually("every fileserver live", async || {
        let info = ns.client.cluster().await.unwrap();
        info.fileservers.iter().filter(|f| f.alive).count() == n
    })
    .await;
    servers
}
