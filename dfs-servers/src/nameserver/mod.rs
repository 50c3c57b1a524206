//! The nameserver: the namespace, the directory -> fileserver map and the fileserver registry
//! (see docs/api/nameserver.md).
//!
//! `store` is the redb layer, `namespace` the POSIX logic, `placement` the directory map,
//! `registry` fileserver liveness, `routes` the HTTP surface, `maintenance` the background
//! replication repair and garbage collection, `holders` adding and dropping holders,
//! `orphans` the timing of uploads that were never published, and `scrub` the periodic check
//! of every stored copy against the namespace's checksums; `xattr` the extended attributes.

pub mod holders;
pub mod leases;
pub mod maintenance;
pub mod namespace;
pub mod orphans;
pub mod placement;
pub mod registry;
pub mod routes;
pub mod scrub;
pub mod store;
pub mod upgrade;
pub mod xattr;

use crate::common;
use clap::Parser;
use dfs_proto::client::FileClient;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Nameserver settings; every key is optional (a config file is a few lines of JSON).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Directory of the redb file; keeps the whole namespace across restarts.
    pub data: PathBuf,
    /// The lockserver clients and fileservers should use; reported, never called.
    pub lockserver: Option<String>,
    /// Copies wanted per file.
    pub replication: u32,
    /// Fewest acknowledged copies a publish accepts. Unset (the default) means the file's
    /// replication factor: `close()` returns 0 only once every wanted copy is durable.
    /// Setting it lower is the operator's explicit trade of durability for availability
    /// (docs/operations.md).
    pub min_replicas: Option<u32>,
    /// How often fileservers heartbeat (told to them at registration).
    pub heartbeat_interval_ms: u64,
    /// A fileserver silent this long is dead.
    pub heartbeat_timeout_ms: u64,
    /// How often the repair task looks for under-replicated files.
    pub repair_interval_ms: u64,
    /// How often the garbage collector lists the fileservers' blobs.
    pub gc_interval_ms: u64,
    /// A blob of a version newer than its file's current one (an upload whose publish never
    /// came) is deleted once GC has seen it unpublished for this long. Long enough for any
    /// writer between its upload and its publish; short enough that failed publishes do not
    /// fill the disks.
    pub orphan_after_ms: u64,
    /// File holding the cluster key (`dfs keygen cluster`); every request must carry a
    /// credential made from it.
    pub cluster_key: Option<PathBuf>,
    /// Accept every request without a credential. Only for a trusted machine or network.
    pub insecure: bool,
    /// Ids of client keys that are no longer accepted (see docs/security.md).
    pub revoked_keys: Vec<String>,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`); unset serves plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM certificate of the CA that signed the fileservers' certificates, for repair
    /// copies, listings and deletes over https.
    pub ca: Option<PathBuf>,
    /// Time a client has to send a whole request body; a slower one is cut off with 408, so
    /// slow senders cannot hold connections and memory (docs/security.md, Limits).
    pub body_deadline_ms: u64,
    /// Pause between two scrub passes, which have every holder re-read its copy of each
    /// current version and drop the ones that are missing or differ (then repaired); 0 turns
    /// the scrub off.
    pub scrub_interval_ms: u64,
    /// Bytes a second the scrub has the fileservers read, so it never takes the disks from
    /// the clients.
    pub scrub_bytes_per_sec: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7000".into(),
            data: PathBuf::from("./data/nameserver"),
            lockserver: None,
            replication: 2,
            min_replicas: None,
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_ms: 3000,
            repair_interval_ms: 1000,
            gc_interval_ms: 10_000,
            orphan_after_ms: 3_600_000,
            cluster_key: None,
            insecure: false,
            revoked_keys: Vec::new(),
            tls_cert: None,
            tls_key: None,
            ca: None,
            body_deadline_ms: common::limits::DEFAULT_BODY_DEADLINE_MS,
            scrub_interval_ms: 24 * 3_600_000,
            scrub_bytes_per_sec: 32 << 20,
        }
    }
}

impl Config {
    /// Acknowledged copies a publish needs for a file whose directory wants `wanted`:
    /// `min_replicas` when the operator set it (capped by `wanted`, so a directory with a
    /// lower factor still works), else `wanted`.
    pub fn min_copies(&self, wanted: u32) -> u32 {
        self.min_replicas.map_or(wanted, |m| m.min(wanted))
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.replication >= 1, "replication must be at least 1");
        anyhow::ensure!(
            self.min_replicas.is_none_or(|m| m >= 1),
            "min_replicas must be at least 1"
        );
        anyhow::ensure!(
            self.heartbeat_interval_ms >= 1
                && self.heartbeat_timeout_ms > self.heartbeat_interval_ms,
            "heartbeat_timeout_ms must exceed heartbeat_interval_ms"
        );
        anyhow::ensure!(
            self.repair_interval_ms >= 1 && self.gc_interval_ms >= 1,
            "repair_interval_ms and gc_interval_ms must be positive"
        );
        Ok(())
    }
}

/// Command-line flags; they win over the config file.
#[derive(Debug, Parser)]
#[command(
    name = "dfs-nameserver",
    about = "DFS nameserver: namespace and fileserver map"
)]
pub struct Args {
    /// JSON config file (keys: listen, data, lockserver, replication, min_replicas, tls_cert,
    /// tls_key, ca, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:7000).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory (default ./data/nameserver).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Lockserver URL handed to clients and fileservers.
    #[arg(long)]
    pub lockserver: Option<String>,
    /// Copies wanted per file (default 2).
    #[arg(long)]
    pub replication: Option<u32>,
    /// Fewest acknowledged copies a publish accepts (default: the replication factor).
    #[arg(long)]
    pub min_replicas: Option<u32>,
    /// Serving over TLS.
    #[command(flatten)]
    pub tls: common::tls::TlsArgs,
    /// PEM CA certificate that signed the fileservers' certificates (for https URLs).
    #[arg(long, value_name = "FILE", env = "DFS_CA")]
    pub ca: Option<PathBuf>,
    /// Authentication (`--cluster-key`, `--insecure`, `--revoked-key`).
    #[command(flatten)]
    pub auth: common::auth::AuthArgs,
}

impl Args {
    /// The config file merged with the flags, flags winning.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut config: Config = common::load_config(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(data) = self.data {
            config.data = data;
        }
        if let Some(lockserver) = self.lockserver {
            config.lockserver = Some(lockserver);
        }
        if let Some(replication) = self.replication {
            config.replication = replication;
        }
        if let Some(min) = self.min_replicas {
            config.min_replicas = Some(min);
        }
        self.tls.apply(&mut config.tls_cert, &mut config.tls_key);
        if let Some(ca) = self.ca {
            config.ca = Some(ca);
        }
        self.auth.apply(
            &mut config.cluster_key,
            &mut config.insecure,
            &mut config.revoked_keys,
        );
        config.validate()?;
        Ok(config)
    }
}

/// Everything the handlers and background tasks share.
pub struct State {
    /// The durable namespace, map and registry.
    pub store: store::Store,
    /// Fileserver liveness (shared with the short probes of servers a writer excluded).
    pub registry: Arc<registry::Registry>,
    /// Settings.
    pub config: Config,
    /// Client for repair copies, blob listings and deletes.
    pub files: FileClient,
    /// Blobs to delete soon (best effort; the periodic GC catches anything missed).
    pub garbage: tokio::sync::mpsc::UnboundedSender<Vec<namespace::Garbage>>,
    /// Fileservers that just registered, for the GC task to take an inventory of.
    pub inventory: tokio::sync::mpsc::UnboundedSender<dfs_proto::ServerId>,
    /// Unpublished blobs GC has seen, and when it first saw each (in memory: a restart only
    /// makes them wait longer).
    pub orphans: orphans::Orphans,
    /// Checks credentials, and signs blob capabilities with the cluster key.
    pub verifier: Arc<dfs_proto::auth::Verifier>,
    /// Which key writes which file, from the leases presented (for `busy`).
    pub writers: leases::Writers,
    /// The lockserver, asked whether a lease that makes a file busy is still held.
    pub locks: Option<dfs_proto::client::LockClient>,
}

/// Nanoseconds since the Unix epoch, for mtimes.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Serves the nameserver on `listener` until `shutdown` resolves; returns once the store is
/// closed, so another instance may open the same data directory.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_then(listener, config, shutdown, || {}).await
}

/// Like [`run`], calling `ready` once the store is open and requests can be answered (the
/// listener is already bound, so connections made from then on wait in its backlog).
pub async fn run_then(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    config.validate()?;
    let verifier = Arc::new(common::auth::verifier(
        config.cluster_key.as_deref(),
        config.insecure,
        &config.revoked_keys,
        "dfs-nameserver",
    )?);
    let tls = common::tls::acceptor(config.tls_cert.as_deref(), config.tls_key.as_deref())?;
    let http = common::tls::server_http_client(config.ca.as_deref())?;
    let data = config.data.clone();
    let store = tokio::task::spawn_blocking(move || store::Store::open(&data, now_ns())).await??;
    let registry = Arc::new(registry::Registry::new(Duration::from_millis(
        config.heartbeat_timeout_ms,
    )));
    // Fileservers known from before a restart get one timeout of grace: they are most likely
    // still up and will heartbeat within a second.
    for (id, record) in store.read(store::Read::fileservers)? {
        registry.seen(&id, &record.url, record.free_bytes);
    }
    let (garbage_tx, garbage_rx) = tokio::sync::mpsc::unbounded_channel();
    let (inventory_tx, inventory_rx) = tokio::sync::mpsc::unbounded_channel();
    let locks = config.lockserver.as_deref().map(|url| {
        let client = dfs_proto::client::LockClient::with_http(url, http.clone());
        match verifier.cluster_key() {
            Some(key) => client.with_credential(key.server_credential()),
            None => client,
        }
    });
    let state = Arc::new(State {
        store,
        registry,
        config,
        files: match verifier.cluster_key() {
            Some(key) => FileClient::with_http(http).with_credential(key.server_credential()),
            None => FileClient::with_http(http),
        },
        writers: leases::Writers::default(),
        locks,
        garbage: garbage_tx,
        inventory: inventory_tx,
        orphans: orphans::Orphans::default(),
        verifier: verifier.clone(),
    });
    let mut tasks = maintenance::spawn(state.clone(), garbage_rx, inventory_rx);
    if state.config.scrub_interval_ms > 0 {
        tasks.push(tokio::spawn(scrub::run(state.clone())));
    }
    let router = common::authenticated(routes::router(state.clone()), verifier);
    ready();
    let served = common::serve_with_tls(listener, router, tls, shutdown).await;
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    drop(state);
    served?;
    Ok(())
}

/// The binary's body: merge flags and file, bind, serve until SIGTERM/SIGINT.
pub async fn main_with(args: Args) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let (listener, local) = common::bind(&config.listen).await?;
    let tls = config.tls_cert.is_some();
    run_then(listener, config, common::shutdown_signal(), move || {
        common::announce_ready("dfs-nameserver", local, tls)
    })
    .await
}
