//! Lockserver settings: a small JSON file and command-line flags, flags winning.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the lockserver can be told; every key is optional.
///
/// Example `locks.json`: `{"listen": "127.0.0.1:7001", "data": "/var/lib/dfs/locks", "ttl_ms": 10000}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; the binary binds it, tests pass their own listener.
    pub listen: String,
    /// Directory of the lease store (`locks.redb`); created if missing.
    pub data: PathBuf,
    /// Lease length when a request names none: long enough to survive a GC pause or a slow
    /// network, short enough that a crashed client's lock frees itself soon.
    pub ttl_ms: u64,
    /// Longest lease a client may ask for, so a typo cannot lock a path for a day.
    pub max_ttl_ms: u64,
    /// After a lease expires its paths stay blocked this long, so a holder whose clock or
    /// network is slightly behind has stopped writing before anyone else starts.
    pub lock_delay_ms: u64,
    /// After a restart every saved lease lives at least this long, so holders that could not
    /// renew while the server was down get the chance to; `null` means `ttl_ms`.
    pub restart_grace_ms: Option<u64>,
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
    /// Time a client has to send a whole request body; a slower one is cut off with 408.
    pub body_deadline_ms: u64,
    /// Leases one client (session name) may hold at once; more are refused with `busy` (423),
    /// so one client cannot grow the table and the store without bound.
    pub max_leases_per_client: usize,
    /// Live leases in the whole table, whoever holds them: the memory bound that holds even
    /// against a client that invents a new name per request.
    pub max_leases: usize,
    /// Paths one lease may name (a rename needs two).
    pub max_paths_per_lease: usize,
    /// Total bytes of the paths one lease names (each path is at most 4096 bytes anyway).
    pub max_lease_path_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7001".to_owned(),
            data: PathBuf::from("./data/lockserver"),
            ttl_ms: 10_000,
            max_ttl_ms: 300_000,
            lock_delay_ms: 1_000,
            restart_grace_ms: None,
            cluster_key: None,
            insecure: false,
            revoked_keys: Vec::new(),
            tls_cert: None,
            tls_key: None,
            body_deadline_ms: crate::common::limits::DEFAULT_BODY_DEADLINE_MS,
            max_leases_per_client: 1024,
            max_leases: 100_000,
            max_paths_per_lease: 64,
            max_lease_path_bytes: 16 * 1024,
        }
    }
}

impl Config {
    /// The lease length used when a request names none.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// How long an expired lease keeps its paths blocked.
    pub fn lock_delay(&self) -> Duration {
        Duration::from_millis(self.lock_delay_ms)
    }

    /// The minimum life of a saved lease after a restart.
    pub fn restart_grace(&self) -> Duration {
        Duration::from_millis(self.restart_grace_ms.unwrap_or(self.ttl_ms))
    }

    /// Refuses settings that would make leases meaningless, at start rather than at first use.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.ttl_ms > 0, "ttl_ms must be greater than 0");
        anyhow::ensure!(
            self.max_leases_per_client >= 1
                && self.max_leases >= 1
                && self.max_paths_per_lease >= 1
                && self.max_lease_path_bytes >= 1,
            "max_leases_per_client, max_leases, max_paths_per_lease and max_lease_path_bytes \
             must be positive"
        );
        anyhow::ensure!(
            self.max_ttl_ms >= self.ttl_ms,
            "max_ttl_ms ({}) must be at least ttl_ms ({})",
            self.max_ttl_ms,
            self.ttl_ms
        );
        // Keep deadlines far from overflow when added to clocks.
        let year_ms = 365 * 24 * 3600 * 1000;
        anyhow::ensure!(
            self.max_ttl_ms <= year_ms,
            "max_ttl_ms must be at most a year"
        );
        anyhow::ensure!(
            self.lock_delay_ms <= year_ms,
            "lock_delay_ms must be at most a year"
        );
        anyhow::ensure!(
            self.restart_grace_ms.unwrap_or(0) <= year_ms,
            "restart_grace_ms must be at most a year"
        );
        Ok(())
    }
}

/// Command line of `dfs-lockserver`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "dfs-lockserver",
    version,
    about = "DFS lockserver: write leases with fencing tokens"
)]
pub struct Args {
    /// JSON config file (keys: listen, data, ttl_ms, max_ttl_ms, lock_delay_ms, restart_grace_ms,
    /// tls_cert, tls_key,
    /// body_deadline_ms, max_leases_per_client, max_leases, max_paths_per_lease,
    /// max_lease_path_bytes,
    /// cluster_key, insecure, revoked_keys).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7001].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Data directory [default: ./data/lockserver].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Default lease length in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    pub ttl_ms: Option<u64>,
    /// Delay after an expiry before the paths are free, in milliseconds [default: 1000].
    #[arg(long, value_name = "MS")]
    pub lock_delay_ms: Option<u64>,
    /// Serving over TLS.
    #[command(flatten)]
    pub tls: crate::common::tls::TlsArgs,
    /// Authentication (`--cluster-key`, `--insecure`, `--revoked-key`).
    #[command(flatten)]
    pub auth: crate::common::auth::AuthArgs,
}

impl Args {
    /// The config file (if any) with the flags laid over it, checked.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut config: Config = crate::common::load_config(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(data) = self.data {
            config.data = data;
        }
        if let Some(ttl_ms) = self.ttl_ms {
            config.ttl_ms = ttl_ms;
            config.max_ttl_ms = config.max_ttl_ms.max(ttl_ms);
        }
        if let Some(delay) = self.lock_delay_ms {
            config.lock_delay_ms = delay;
        }
        self.tls.apply(&mut config.tls_cert, &mut config.tls_key);
        self.auth.apply(
            &mut config.cluster_key,
            &mut config.insecure,
            &mut config.revoked_keys,
        );
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.json");
        std::fs::write(
            &file,
            r#"{"listen": "127.0.0.1:9", "ttl_ms": 500, "lock_delay_ms": 7}"#,
        )
        .unwrap();
        let args = Args::parse_from([
            "dfs-lockserver",
            "--config",
            file.to_str().unwrap(),
            "--ttl-ms",
            "800",
        ]);
        let config = args.into_config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:9");
        assert_eq!(config.ttl_ms, 800);
        assert_eq!(config.lock_delay_ms, 7);
        assert_eq!(config.restart_grace(), Duration::from_millis(800));
        assert_eq!(config.data, PathBuf::from("./data/lockserver"));
    }

    #[test]
    fn unknown_keys_and_zero_ttl_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.json");
        std::fs::write(&file, r#"{"ttl": 5}"#).unwrap();
        let args = Args::parse_from(["x", "--config", file.to_str().unwrap()]);
        assert!(args.into_config().is_err());
        let args = Args::parse_from(["x", "--ttl-ms", "0"]);
        assert!(args.into_config().is_err());
    }
}
