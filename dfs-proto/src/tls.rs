//! Which server certificates the HTTP clients of DFS trust, for `https://` clusters.
//!
//! rustls with the `ring` provider (no OpenSSL, nothing fetched at build time). A client
//! trusts either the CA file it was given (`--ca FILE`, `DFS_CA`, `-o ca=FILE`) and nothing
//! else, or, without one, the process default: the CA a binary installed with
//! [`TlsConfig::install_default`], else the public web roots (`webpki-roots`).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

/// What a client trusts. Plain `http://` URLs ignore it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// PEM file with the certificate(s) of the CA that signed the servers' certificates: a
    /// private cluster CA is trusted alone, so no public CA can vouch for a DFS server.
    /// `None` uses the process default.
    pub ca: Option<PathBuf>,
}

/// The process-wide trust (set by a binary from its `--ca`); `None` means the web roots.
static PROCESS_DEFAULT: RwLock<Option<Arc<ClientConfig>>> = RwLock::new(None);

impl TlsConfig {
    /// Trusts only the CA(s) in the PEM file `ca`.
    pub fn with_ca(ca: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            ca: Some(ca.into()),
        }
    }

    /// The rustls settings of a client with this trust; reads the CA file now, so a missing
    /// or malformed file is reported at start, not at the first request.
    pub fn client_config(&self) -> io::Result<Arc<ClientConfig>> {
        match &self.ca {
            Some(path) => Ok(Arc::new(client_config(ca_roots(path)?)?)),
            None => process_default(),
        }
    }

    /// A DFS HTTP client (see [`crate::client::http_client`]) with this trust.
    pub fn http_client(&self) -> io::Result<reqwest::Client> {
        Ok(crate::client::http_client_with(&*self.client_config()?))
    }

    /// Makes this trust the default of every client of this process built without an
    /// explicit one ([`crate::client::http_client`], `NameClient::new`, ...): what the `dfs`
    /// and `dfs-fuse` binaries do with `--ca`. A config without a CA resets the default.
    pub fn install_default(&self) -> io::Result<()> {
        let config = match &self.ca {
            Some(path) => Some(Arc::new(client_config(ca_roots(path)?)?)),
            None => None,
        };
        *PROCESS_DEFAULT
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }
}

/// The rustls settings clients use when given no CA of their own.
pub fn process_default() -> io::Result<Arc<ClientConfig>> {
    let installed = PROCESS_DEFAULT
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    if let Some(config) = installed {
        return Ok(config);
    }
    // Built once: every plain `http_client()` would otherwise copy ~150 roots.
    static WEB_ROOTS: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = WEB_ROOTS.get() {
        return Ok(config.clone());
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = Arc::new(client_config(roots)?);
    Ok(WEB_ROOTS.get_or_init(|| config).clone())
}

/// Every certificate of the PEM file `path` as a root of trust.
fn ca_roots(path: &Path) -> io::Result<RootCertStore> {
    let context = |err: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("CA file {}: {err}", path.display()),
        )
    };
    let bytes = std::fs::read(path).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot read CA file {}: {err}", path.display()),
        )
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|err| context(format!("not PEM: {err}")))?;
        roots
            .add(cert)
            .map_err(|err| context(format!("not a usable CA certificate: {err}")))?;
    }
    if roots.is_empty() {
        return Err(context("no CERTIFICATE block in it".into()));
    }
    Ok(roots)
}

/// The ring crypto provider, also made rustls's process default the first time, so that a
/// `reqwest::Client` built elsewhere in the process without our settings still works
/// instead of panicking for want of a provider (reqwest is built without one of its own).
pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Err means a provider was installed already, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3 over ring, trusting `roots`, without client certificates (clients prove
/// who they are with their DFS key, not at the TLS layer).
fn client_config(roots: RootCertStore) -> io::Result<ClientConfig> {
    let config = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("dfs-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = TlsConfig::with_ca(&missing).client_config().unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = TlsConfig::with_ca(&empty).http_client().unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_ca_the_web_roots_are_trusted() {
        let config = TlsConfig::default().client_config().unwrap();
        assert!(config.crypto_provider().cipher_suites.len() > 1);
        TlsConfig::default().http_client().unwrap();
    }
}
