//! The fileserver: stores immutable file versions as blobs keyed by (file id, version).
//!
//! Reference: docs/api/fileserver.md. Uploads stream to a temp file while their checksum is
//! checked, then fsync, rename, fsync the directory, and only then the reply. All disk access
//! goes through [`storage::Storage`] so [`powerloss::PowerLossStorage`] can show what survives
//! a power cut. At start the server registers with the nameserver and keeps heartbeating.

pub mod capability;
pub mod config;
pub mod ingest;
pub mod powerloss;
pub mod range;
pub mod registration;
pub mod routes;
pub mod stats;
pub mod storage;
pub mod store;

pub use config::{Args, Config};
pub use storage::{RealStorage, Storage};
pub use store::BlobStore;

use anyhow::Context;
use dfs_proto::client::{FileClient, NameClient};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A fileserver whose store is open and which can answer requests as soon as it serves.
#[derive(Debug)]
pub struct Fileserver {
    listener: TcpListener,
    state: routes::AppState,
    identity: registration::Identity,
    nameserver: Option<NameClient>,
    tls: Option<crate::common::tls::ServerTls>,
}

impl Fileserver {
    /// Opens the data directory (cleaning temp leftovers, indexing blobs) with the real disk.
    pub async fn start(listener: TcpListener, config: Config) -> anyhow::Result<Fileserver> {
        Fileserver::start_with_storage(listener, config, Arc::new(RealStorage)).await
    }

    /// Same as [`Fileserver::start`] over any storage (tests pass a power-loss simulator).
    pub async fn start_with_storage(
        listener: TcpListener,
        config: Config,
        storage: Arc<dyn Storage>,
    ) -> anyhow::Result<Fileserver> {
        let local = listener.local_addr()?;
        let verifier = Arc::new(crate::common::auth::verifier(
            config.cluster_key.as_deref(),
            config.insecure,
            &config.revoked_keys,
            "dfs-fileserver",
        )?);
        let tls =
            crate::common::tls::acceptor(config.tls_cert.as_deref(), config.tls_key.as_deref())?;
        let http = crate::common::tls::server_http_client(config.ca.as_deref())?;
        let data = config.data.clone();
        let stats = Arc::new(stats::Stats::default());
        let storage: Arc<dyn Storage> =
            Arc::new(storage::CountingStorage::new(storage, stats.fsyncs.clone()));
        let store =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(BlobStore, String, String)> {
                let store = BlobStore::open(&data, storage)
                    .with_context(|| format!("cannot open data directory {}", data.display()))?;
                let id = store
                    .server_id()
                    .context("cannot read or create the server id")?;
                let secret = store
                    .server_secret()
                    .context("cannot read or create the server secret")?;
                Ok((store, id, secret))
            })
            .await??;
        let (store, id, secret) = store;
        // What this server presents to the nameserver and to other fileservers.
        let credential = verifier
            .cluster_key()
            .map(dfs_proto::auth::ClusterKey::server_credential);
        let mut files = FileClient::new();
        if let Some(credential) = &credential {
            files = files.with_credential(credential.clone());
        }
        let nameserver = match config.nameserver.trim() {
            "" => None,
            url => {
                reqwest::Url::parse(url)
                    .with_context(|| format!("nameserver {url:?} is not a URL"))?;
                let names = NameClient::with_http(url, http.clone());
                Some(match &credential {
                    Some(credential) => names.with_credential(credential.clone()),
                    None => names,
                })
            }
        };
        let url = config
            .advertise
            .clone()
            .unwrap_or_else(|| default_url(local, tls.is_some()));
        let store = Arc::new(store);
        tracing::info!(id = %id, url = %url, blobs = store.list().len(), "fileserver store open");
        Ok(Fileserver {
            listener,
            state: routes::AppState {
                store,
                stats,
                max_body_bytes: config.max_body_bytes,
                limits: routes::Limits {
                    body_deadline_ms: config.body_deadline_ms,
                    upload_grace_ms: config.upload_grace_ms,
                    upload_min_bytes_per_sec: config.upload_min_bytes_per_sec,
                },
                files,
                verifying: Arc::new(tokio::sync::Semaphore::new(routes::MAX_VERIFYING)),
                verifier,
                sources: Arc::new(capability::Sources::new(nameserver.clone())),
            },
            identity: registration::Identity {
                id,
                secret,
                url,
                dirs: config.dirs,
            },
            nameserver,
            tls,
        })
    }

    /// The stable server id stored in the data directory.
    pub fn id(&self) -> &str {
        &self.identity.id
    }

    /// The URL it registers under.
    pub fn url(&self) -> &str {
        &self.identity.url
    }

    /// Whether it serves https (it was given a certificate and key).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` resolves, registering and heartbeating in the background.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let heartbeat = self.nameserver.map(|names| {
            tokio::spawn(registration::keep_registered(
                names,
                self.identity.clone(),
                self.state.store.clone(),
            ))
        });
        let router = routes::router(self.state);
        let result = crate::common::serve_with_tls(self.listener, router, self.tls, shutdown).await;
        if let Some(task) = heartbeat {
            task.abort();
        }
        result.context("fileserver stopped with an error")
    }
}

fn default_url(local: SocketAddr, tls: bool) -> String {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    crate::common::base_url(addr, tls)
}

/// Runs a fileserver on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Fileserver::start(listener, config)
        .await?
        .serve(shutdown)
        .await
}

#[cfg(test)]
mod tests;
