//! The lockserver: exclusive write leases on exact paths, with fencing tokens from one durable
//! counter that only grows (reference: docs/api/lockserver.md).
//!
//! Files: `config` (settings and flags), `store` (redb: the token reservation, leases at a
//! clean stop), `journal` (every lease change, without fsync, for a restart after a kill),
//! `table` (the lease rules), `routes` (HTTP). [`run`] is what tests call;
//! the binary uses [`LockServer::open`] + [`LockServer::serve`] so it can print its ready line
//! only after the store is open.

pub mod config;
pub mod journal;
pub mod routes;
pub mod store;
pub mod table;

pub use config::{Args, Config};
pub use store::Store;
pub use table::LockTable;

use anyhow::Context;
use routes::Shared;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Name of the store file inside the data directory.
pub const STORE_FILE: &str = "locks.redb";

/// A lockserver whose store is open and whose table is loaded, ready to serve.
#[derive(Debug)]
pub struct LockServer {
    table: Shared,
    counters: store::StoreCounters,
    sweep_every: Duration,
    verifier: Arc<dfs_proto::auth::Verifier>,
    tls: Option<crate::common::tls::ServerTls>,
    body_deadline_ms: u64,
}

impl LockServer {
    /// Opens `config.data/locks.redb` (creating the directory) and loads the leases.
    pub async fn open(config: Config) -> anyhow::Result<LockServer> {
        config.validate()?;
        let cfg = config.clone();
        let table = tokio::task::spawn_blocking(move || -> anyhow::Result<LockTable> {
            std::fs::create_dir_all(&cfg.data)
                .with_context(|| format!("cannot create data dir {}", cfg.data.display()))?;
            let file = cfg.data.join(STORE_FILE);
            let store = Store::open(&file)
                .with_context(|| format!("cannot open lock store {}", file.display()))?;
            Ok(LockTable::open_with_journal(store, &cfg, Some(&cfg.data))?)
        })
        .await??;
        LockServer::with_table(table, &config)
    }

    /// Serves an already loaded table (tests use it with a store on a simulated disk); fails
    /// when the TLS certificate, its key or the cluster key cannot be loaded.
    pub fn with_table(table: LockTable, config: &Config) -> anyhow::Result<LockServer> {
        let tls =
            crate::common::tls::acceptor(config.tls_cert.as_deref(), config.tls_key.as_deref())?;
        let verifier = Arc::new(crate::common::auth::verifier(
            config.cluster_key.as_deref(),
            config.insecure,
            &config.revoked_keys,
            "dfs-lockserver",
        )?);
        // Sweep often enough that dead leases leave the disk soon after their lock-delay.
        let sweep_every = Duration::from_millis((config.ttl_ms + config.lock_delay_ms) / 4)
            .clamp(Duration::from_millis(25), Duration::from_secs(1));
        Ok(LockServer {
            counters: table.store_counters(),
            table: Arc::new(Mutex::new(table)),
            sweep_every,
            verifier,
            tls,
            body_deadline_ms: config.body_deadline_ms,
        })
    }

    /// Whether it serves https (it was given a certificate and key).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Answers requests on `listener` until `shutdown` resolves, then closes the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let sweeper = tokio::spawn(sweep_loop(self.table.clone(), self.sweep_every));
        let router = crate::common::authenticated(
            routes::router(
                routes::LockState {
                    table: self.table.clone(),
                    key: self.verifier.cluster_key().cloned(),
                    counters: self.counters,
                },
                self.body_deadline_ms,
            ),
            self.verifier,
        );
        let served = crate::common::serve_with_tls(listener, router, self.tls, shutdown).await;
        sweeper.abort();
        let _ = sweeper.await;
        // Release the database file now, even if a stray connection still holds the table,
        // so a restart on the same directory can open it.
        let table = self.table.clone();
        let _ = tokio::task::spawn_blocking(move || {
            table.lock().unwrap_or_else(|p| p.into_inner()).close();
        })
        .await;
        served.context("lockserver serve loop failed")
    }
}

async fn sweep_loop(table: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match routes::with_table(&table, |t| t.sweep()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "expired leases forgotten"),
            Err(err) => tracing::warn!(%err, "sweeping expired leases failed"),
        }
    }
}

/// Runs the lockserver on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    LockServer::open(config)
        .await?
        .serve(listener, shutdown)
        .await
}
