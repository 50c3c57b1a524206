//! Server-side TLS: the certificate and key from PEM files, and the handshake of each
//! connection, bounded in time and inside the connection's own task so that a client that
//! connects and stays silent cannot stall the accept loop.

use anyhow::Context;
use dfs_proto::{ApiError, ErrorCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a new connection may take to complete its TLS handshake: as long as the header
/// read timeout, the other bound on what a silent client may hold.
pub const HANDSHAKE_TIMEOUT: Duration = super::http::HEADER_READ_TIMEOUT;

/// The first byte of every TLS record that opens a connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A server's loaded certificate and key, ready to accept TLS connections.
#[derive(Clone)]
pub struct ServerTls(TlsAcceptor);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

/// The TLS side of a server, from its `tls_cert`/`tls_key` settings: `None` serves plain
/// HTTP. Both or neither must be given, so a half-configured server refuses to start
/// instead of silently serving in the clear.
pub fn acceptor(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Option<ServerTls>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => load(cert, key).map(|a| Some(ServerTls(a))),
        (Some(_), None) => anyhow::bail!("tls_cert is set but tls_key is not: give both"),
        (None, Some(_)) => anyhow::bail!("tls_key is set but tls_cert is not: give both"),
    }
}

/// Reads the PEM certificate chain (server certificate first) and private key.
fn load(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("TLS certificate {} is not PEM", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "TLS certificate {} holds no CERTIFICATE block",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let provider = dfs_proto::tls::ring_provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not fit together")?;
    // Our servers speak HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Completes the handshake on `stream` within [`HANDSHAKE_TIMEOUT`], or answers a client
/// that sent plain HTTP with a JSON `400` that says to use `https://` (instead of a closed
/// connection the client cannot explain). `None`: nothing more to serve on this connection.
pub async fn handshake(tls: &ServerTls, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        refuse_plain_http(stream).await;
        return None;
    }
    match tokio::time::timeout_at(deadline, tls.0.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(err)) => {
            tracing::debug!(%err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Bytes of a plain-HTTP request read and dropped before closing, so the kernel does not
/// reset the connection (and lose our answer) over unread data.
const DRAIN_LIMIT: usize = 64 << 10;

async fn refuse_plain_http(mut stream: TcpStream) {
    let error = ApiError::new(
        ErrorCode::BadRequest,
        "this server speaks TLS only: use an https:// URL",
    );
    let body = serde_json::to_string(&error).unwrap_or_default();
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        let mut drained = 0;
        let mut buf = [0u8; 4096];
        while drained < DRAIN_LIMIT {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        std::io::Result::Ok(())
    })
    .await;
}

/// `--tls-cert`/`--tls-key`, flattened into every server's command line; each overrides the
/// config key of the same name.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (server certificate first) to serve HTTPS with; needs
    /// --tls-key. Without both the server speaks plain HTTP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Lays the flags over the config file's `tls_cert` and `tls_key`.
    pub fn apply(self, cert: &mut Option<PathBuf>, key: &mut Option<PathBuf>) {
        if self.tls_cert.is_some() {
            *cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            *key = self.tls_key;
        }
    }
}

/// A client for this server's own requests to the other servers (registration, repair
/// copies, GC), trusting the CA file `ca` when given, else the process default.
pub fn server_http_client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let tls = dfs_proto::tls::TlsConfig {
        ca: ca.map(Path::to_path_buf),
    };
    tls.http_client()
        .context("cannot set up TLS for requests to other servers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::certs::LocalCerts;

    #[test]
    fn half_a_tls_config_is_refused() {
        let err = acceptor(Some(Path::new("/c.pem")), None).unwrap_err();
        assert!(err.to_string().contains("tls_key"), "{err}");
        let err = acceptor(None, Some(Path::new("/k.pem"))).unwrap_err();
        assert!(err.to_string().contains("tls_cert"), "{err}");
        assert!(acceptor(None, None).unwrap().is_none());
    }

    #[test]
    fn generated_certificates_load_and_a_foreign_key_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let ours = LocalCerts::ensure(&dir.path().join("a")).unwrap();
        assert!(acceptor(Some(&ours.cert), Some(&ours.key))
            .unwrap()
            .is_some());
        let other = LocalCerts::ensure(&dir.path().join("b")).unwrap();
        let err = acceptor(Some(&ours.cert), Some(&other.key)).unwrap_err();
        assert!(format!("{err:#}").contains("do not fit"), "{err:#}");
        let err = acceptor(Some(&ours.ca), Some(&dir.path().join("none"))).unwrap_err();
        assert!(format!("{err:#}").contains("none"), "{err:#}");
    }
}
