//! In-process tests of the fileserver: real HTTP on 127.0.0.1:0 through the typed clients.

mod bad_input;
mod http;
mod power;
mod registration;

use super::{Config, Fileserver, Storage};
use dfs_proto::client::FileClient;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fileserver running in this process.
pub struct TestServer {
    pub url: String,
    pub id: String,
    pub data: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(data: &Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_on(data, tweak, Arc::new(super::RealStorage)).await
    }

    pub async fn start_on(
        data: &Path,
        tweak: impl FnOnce(&mut Config),
        storage: Arc<dyn Storage>,
    ) -> TestServer {
        let mut config = Config {
            data: data.to_path_buf(),
            nameserver: String::new(),
            insecure: true,
            ..Config::default()
        };
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = format!("http://{}", listener.local_addr().unwrap());
        let server = Fileserver::start_with_storage(listener, config, storage)
            .await
            .unwrap();
        let (url, id) = (local, server.id().to_owned());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        TestServer {
            url,
            id,
            data: data.to_path_buf(),
            stop: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }

    /// Names of files in the temp directory (must be empty whenever no upload runs).
    pub fn temp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.data.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn client() -> FileClient {
    FileClient::new()
}

/// Polls `check` until it holds or 10 s pass.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
