//! Fileserver settings: a small JSON file and the same settings as flags (flags win).

use dfs_proto::DfsPath;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Default limit of one upload: large enough for any file a user will copy in.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 << 30;

/// Everything a fileserver needs to know; every key is optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`ADDR:PORT`).
    pub listen: String,
    /// Data directory holding blobs, temp files and the server id.
    pub data: PathBuf,
    /// Base URL of the nameserver to register with; empty runs stand-alone (no registration).
    pub nameserver: String,
    /// URL clients should use to reach this server; default `http://<actual listen addr>`
    /// (`https://` with `tls_cert`)
    /// (with `127.0.0.1` when listening on an unspecified address).
    pub advertise: Option<String>,
    /// Directories this server asks the nameserver to place on it (may be empty).
    pub dirs: Vec<DfsPath>,
    /// Largest upload accepted, in bytes; a bigger `Content-Length` gets 413 before a byte
    /// of the body is read.
    pub max_body_bytes: u64,
    /// File holding the cluster key (`dfs keygen cluster`); every request must carry a
    /// credential made from it.
    pub cluster_key: Option<PathBuf>,
    /// Accept every request without a credential. Only for a trusted machine or network.
    pub insecure: bool,
    /// Ids of client keys that are no longer accepted (see docs/security.md).
    pub revoked_keys: Vec<String>,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`); unset serves plain HTTP.
    /// With it the default `advertise` URL is `https://`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM certificate of the CA that signed the nameserver's and the other fileservers'
    /// certificates, for registering and fetching copies over https.
    pub ca: Option<PathBuf>,
    /// Time a client has to send a whole JSON request body; a slower one gets 408.
    pub body_deadline_ms: u64,
    /// An upload is never cut off for being slow before this long, so a short stall at its
    /// start (TCP slow start, a busy client) is forgiven.
    pub upload_grace_ms: u64,
    /// After `upload_grace_ms`, an upload whose average rate since its start is below this
    /// is cut off and nothing is stored: a trickle cannot hold a connection and a temp file.
    /// 0 turns the check off.
    pub upload_min_bytes_per_sec: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7100".to_owned(),
            data: PathBuf::from("./data/fileserver"),
            nameserver: "http://127.0.0.1:7000".to_owned(),
            advertise: None,
            dirs: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            cluster_key: None,
            insecure: false,
            revoked_keys: Vec::new(),
            tls_cert: None,
            tls_key: None,
            ca: None,
            body_deadline_ms: crate::common::limits::DEFAULT_BODY_DEADLINE_MS,
            upload_grace_ms: 20_000,
            upload_min_bytes_per_sec: 16 << 10,
        }
    }
}

/// Command line of `dfs-fileserver`; each flag overrides the same key of `--config`.
#[derive(Clone, Debug, Default, clap::Parser)]
#[command(
    name = "dfs-fileserver",
    version,
    about = "DFS fileserver: stores immutable file versions"
)]
pub struct Args {
    /// JSON config file (keys: listen, data, nameserver, advertise, dirs, max_body_bytes,
    /// tls_cert, tls_key, ca,
    /// body_deadline_ms, upload_grace_ms, upload_min_bytes_per_sec,
    /// cluster_key, insecure, revoked_keys).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:7100.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Nameserver base URL, e.g. http://ns:7000 (empty string: do not register).
    #[arg(long, value_name = "URL")]
    pub nameserver: Option<String>,
    /// URL under which clients reach this server.
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// A directory to ask the nameserver for (repeatable).
    #[arg(long = "dir", value_name = "PATH")]
    pub dirs: Vec<DfsPath>,
    /// Largest upload accepted, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Serving over TLS.
    #[command(flatten)]
    pub tls: crate::common::tls::TlsArgs,
    /// PEM CA certificate that signed the other servers' certificates (for https URLs).
    #[arg(long, value_name = "FILE", env = "DFS_CA")]
    pub ca: Option<PathBuf>,
    /// Authentication (`--cluster-key`, `--insecure`, `--revoked-key`).
    #[command(flatten)]
    pub auth: crate::common::auth::AuthArgs,
}

impl Args {
    /// Reads `--config` (if any) and applies the flags on top.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut config: Config = crate::common::load_config(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(data) = self.data {
            config.data = data;
        }
        if let Some(nameserver) = self.nameserver {
            config.nameserver = nameserver;
        }
        if let Some(advertise) = self.advertise {
            config.advertise = Some(advertise);
        }
        if !self.dirs.is_empty() {
            config.dirs = self.dirs;
        }
        if let Some(max) = self.max_body_bytes {
            config.max_body_bytes = max;
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
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fs.json");
        std::fs::write(
            &file,
            r#"{"listen":"127.0.0.1:1","data":"/a","dirs":["/x"],"max_body_bytes":5}"#,
        )
        .unwrap();
        let args = Args::parse_from([
            "dfs-fileserver",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2",
            "--dir",
            "/p",
            "--dir",
            "/q",
        ]);
        let config = args.into_config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:2");
        assert_eq!(config.data, PathBuf::from("/a"));
        assert_eq!(config.max_body_bytes, 5);
        assert_eq!(config.dirs.len(), 2);
        assert_eq!(config.nameserver, "http://127.0.0.1:7000");
    }

    #[test]
    fn auth_flags_override_the_file_and_add_revocations() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fs.json");
        std::fs::write(
            &file,
            r#"{"cluster_key":"/etc/a.key","revoked_keys":["aa"]}"#,
        )
        .unwrap();
        let config = Args::parse_from([
            "dfs-fileserver",
            "--config",
            file.to_str().unwrap(),
            "--cluster-key",
            "/etc/b.key",
            "--revoked-key",
            "bb",
            "--revoked-key",
            "aa",
        ])
        .into_config()
        .unwrap();
        assert_eq!(config.cluster_key, Some(PathBuf::from("/etc/b.key")));
        assert_eq!(config.revoked_keys, ["aa", "bb"]);
        assert!(!config.insecure, "secure unless asked");
        let config = Args::parse_from(["dfs-fileserver", "--insecure"])
            .into_config()
            .unwrap();
        assert!(config.insecure);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fs.json");
        std::fs::write(&file, r#"{"listne":"x"}"#).unwrap();
        let args = Args::parse_from(["dfs-fileserver", "--config", file.to_str().unwrap()]);
        assert!(args.into_config().is_err());
    }
}
